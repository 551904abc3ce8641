"""``privsepd-rootwrap CONF COMMAND [ARGS...]``: drop-in for ``oslo-rootwrap``.

Same usage, decisions (bar docs/deviations.md), exit codes and stderr lines
as oslo_rootwrap/cmd.py, so sudoers lines and callers that parse them keep
working:

====  ==========================================================
rc    stderr (``EXECNAME: ...``)
====  ==========================================================
98    ``No command specified``
97    ``Incorrect value in CONF: MESSAGE`` / ``Incorrect configuration
      file: CONF``, then a second line naming file:line and the cause
99    ``Unauthorized command: ARGV (no filter matched)``
96    ``Executable not found: EXEC (filter match = NAME)``
126   ``Cannot execute EXEC: STEP: ERROR`` (privsepd only; oslo crashed)
128+N the command was killed by signal N
====  ==========================================================

Execution: the decision's final argv runs in a child with the rule's uid,
primary gid and that user's supplementary groups, a sanitized environment
(execute.sanitized_env: fixed PATH, the caller's locale, the rule's
additions), RLIMIT_NOFILE lowered to ``rlimit_nofile``, stdio passed
through, every other descriptor closed; SIGTERM/SIGHUP reaching the shim
are forwarded to it. INI rules run like oslo's (``root`` means full root);
a native TOML rule (CONF ending in ``.toml`` or a drop-in directory) gets
exactly its ``capabilities`` as ambient capabilities, with securebits
NOROOT/NO_SETUID_FIXUP locked, the bounding set cut to those capabilities
and no_new_privs, so uid 0 alone grants nothing.

Start-up is the product here (it runs under sudo for every command a
service issues), so this module imports almost nothing at load time and
reads the policy through the root-owned cache of
:mod:`privsepd.cli.rootwrap_policy`.
"""

from __future__ import annotations

import os
import sys

try:  # CPython: signal's C core, loaded at start, without signal's enum wrappers
    import _signal as signal  # (importing enum costs the shim ~4 ms)
except ImportError:  # pragma: no cover -- PyPy
    import signal  # type: ignore[no-redef]

from privsepd.cli.rootwrap_policy import (
    DEFAULT_CACHE_DIR,
    RC_BADCONFIG,
    RC_CANNOT_EXECUTE,
    RC_NOCOMMAND,
    SIGNAL_BASE,
    Loaded,
    _Exit,
    load,
    load_full,
)

USAGE = "usage: privsepd-rootwrap [--explain] [--no-cache | --cache-dir DIR] CONF COMMAND [ARGS...]"
HELP = f"""{USAGE}
       privsepd-rootwrap --help | --version

Run COMMAND as the user its rule names, if the root-owned policy CONF
(an oslo.rootwrap rootwrap.conf, a native .toml policy or a drop-in
directory) allows it. Drop-in for oslo-rootwrap in a sudoers line.

options:
  --explain        print the decision and every rule considered; run nothing
  --no-cache       read the policy without the root-owned cache
  --cache-dir DIR  keep the compiled policy cache in DIR
                   (default: {DEFAULT_CACHE_DIR})
  --               end of options
  -h, --help       show this help and exit
  --version        show the version and exit

exit codes: the command's own; 99 no filter matched; 98 no command given
(or unknown option); 97 bad configuration; 96 executable not found; 126
cannot execute; 128+N killed by signal N. See privsepd-rootwrap(8).
"""


# -- running ----------------------------------------------------------------------


def _syslog(
    config,  # noqa: ANN001
    execname: str,
    level: int,
    message: str,
    address: str = "/dev/log",
) -> None:
    """oslo's SysLogHandler line: '<PRI>EXECNAME: MESSAGE\\0' to /dev/log.

    The message holds the caller's argv: control characters are escaped so
    that an argument with a newline cannot forge a second line.
    """
    if not config.use_syslog or level < config.syslog_log_level:
        return
    import _socket

    from privsepd.audit import escape_control

    severity = {10: 7, 20: 6, 30: 4, 40: 3, 50: 2}.get(level, 6)
    pri = (config.syslog_log_facility << 3) | severity
    text = escape_control(f"{os.path.basename(execname)}: {message}")
    line = f"<{pri}>{text}\0".encode(errors="replace")
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            sock.connect(address)
            sock.send(line)
        finally:
            sock.close()
    except OSError:
        pass


_audit_log = None


def _audit(**fields) -> None:  # noqa: ANN003
    """One JSON audit record per decision, written by this (root) process.

    The sink is privsepd's default (syslog via /dev/log, else the root-owned
    /var/log/privsepd/audit.jsonl). Raises privsepd.errors.AuditError when
    running as root and the record cannot be written: callers about to run
    a command must then refuse. Unprivileged runs grant nothing, so there the
    record is best effort.
    """
    global _audit_log
    from privsepd.audit import AuditLog
    from privsepd.errors import AuditError

    fields["event"] = "rootwrap"
    for key in ("SUDO_USER", "SUDO_UID"):
        if key in os.environ:
            fields[key.lower()] = os.environ[key]
    try:
        if _audit_log is None:
            _audit_log = AuditLog.open(None, tag="privsepd-rootwrap")
            _audit_log.client_copy = False  # stderr belongs to the command
        _audit_log.record(**fields)
    except AuditError:
        if os.geteuid() == 0:
            raise


def _audit_outcome(**fields) -> None:  # noqa: ANN003
    """A record after the fact (rc, error): the decision record was already written."""
    from privsepd.errors import AuditError

    try:
        _audit(**fields)
    except AuditError:
        pass


def _getlogin() -> str | None:
    try:
        return os.getlogin()
    except OSError:
        return os.getenv("USER") or os.getenv("USERNAME") or os.getenv("LOGNAME")


def _confine_native(caps: frozenset[str]) -> None:
    """In the child, before the uid switch: uid 0 grants nothing, only ``caps`` survive."""
    from privsepd.helper import kernel

    kernel.set_securebits(
        kernel.SECBIT_NOROOT
        | kernel.SECBIT_NOROOT_LOCKED
        | kernel.SECBIT_NO_SETUID_FIXUP
        | kernel.SECBIT_NO_SETUID_FIXUP_LOCKED
        | kernel.SECBIT_KEEP_CAPS_LOCKED
    )
    mask = kernel.cap_mask(caps)
    for cap in range(kernel.last_cap() + 1):
        if not mask & (1 << cap) and kernel.bounding_has(cap):
            kernel.bounding_drop(cap)


def _raise_ambient(caps: frozenset[str]) -> None:
    from privsepd.helper import kernel

    mask = kernel.cap_mask(caps)
    kernel.capset(mask, mask, mask)
    for name in sorted(caps):
        kernel.ambient_raise(kernel.CAPABILITIES[name])
    kernel.set_no_new_privs()


def run_plan(plan, native: bool) -> int:  # noqa: ANN001
    """fork, confine, switch identity, exec; return oslo's exit code for the child.

    ``plan.fds`` (pinned path arguments) stay open in the child at their
    numbers; every other descriptor above 2 is closed.
    """
    fds = set(getattr(plan, "fds", ()))
    if not native and _same_identity(plan) and hasattr(os, "posix_spawn"):
        return _spawn_plain(plan, fds)  # PyPy has no posix_spawn: the fork path below
    if native:
        from privsepd.helper import kernel  # noqa: F401 -- load cffi before fork, not in the child

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: single-threaded copy of the shim
        step = "setup"
        try:
            os.close(r)
            _default_signals()
            # Every descriptor but the error pipe, whatever the soft
            # RLIMIT_NOFILE says (a caller may have lowered it below its fds).
            for entry in os.listdir("/proc/self/fd"):
                fd = int(entry)
                if fd > 2 and fd != w and fd not in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            if fds:
                from privsepd.paths import make_inheritable  # loaded: it pinned them

                for fd in fds:
                    make_inheritable(fd)
            if native:
                step = "confine"
                _confine_native(plan.caps)
            step = "setgroups"
            os.setgroups(list(plan.groups))
            step = "setgid"
            os.setresgid(plan.gid, plan.gid, plan.gid)
            step = "setuid"
            os.setresuid(plan.uid, plan.uid, plan.uid)
            if native:
                step = "capabilities"
                _raise_ambient(plan.caps)
            step = "exec"
            os.execve(plan.argv[0], plan.argv, plan.env)
        except BaseException as exc:  # noqa: BLE001 -- report and leave, never return
            err = getattr(exc, "strerror", None) or str(exc)
            try:
                os.write(w, f"{step}: {err}".encode(errors="replace"))
            finally:
                os._exit(RC_CANNOT_EXECUTE)
    os.close(w)
    failure = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        failure += chunk
    os.close(r)
    if failure:
        os.waitpid(pid, 0)
        raise _Exit(
            RC_CANNOT_EXECUTE, f"Cannot execute {plan.argv[0]}: {failure.decode(errors='replace')}"
        )
    return _wait_forwarding(pid)


def _same_identity(plan) -> bool:  # noqa: ANN001
    """True when the command's uid/gid/groups are already ours (root under sudo)."""
    if {plan.uid} != {os.getuid(), os.geteuid()} or {plan.gid} != {os.getgid(), os.getegid()}:
        return False
    return set(plan.groups) == set(os.getgroups()) | {plan.gid}


def _wait_forwarding(pid: int) -> int:
    """Wait for the child, forwarding SIGTERM/SIGHUP; oslo's exit code for it."""

    def forward(signum, frame):  # noqa: ANN001
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends it to the child too
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    return SIGNAL_BASE - rc if rc < 0 else rc


def _spawn_plain(plan, keep: set[int] = frozenset()) -> int:  # noqa: ANN001
    """posix_spawn (vfork+exec, no Python in the child) when no identity change is needed.

    Descriptors: Python's own are close-on-exec; any inherited one above 2
    is closed explicitly, so the command sees only stdin/stdout/stderr and
    the pinned paths in ``keep`` (made inheritable here: the shim has one
    thread, so no other spawn can catch them).
    """
    if keep:
        from privsepd.paths import make_inheritable  # loaded: it pinned them

        for fd in keep:
            make_inheritable(fd)
    actions = []
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                pass  # the listing's own descriptor
    try:
        pid = os.posix_spawn(
            plan.argv[0],
            plan.argv,
            plan.env,
            file_actions=actions,
            setsigdef=_catchable_signals(),
            setsigmask=(),
        )
    except OSError as exc:
        raise _Exit(
            RC_CANNOT_EXECUTE, f"Cannot execute {plan.argv[0]}: exec: {exc.strerror}"
        ) from None
    return _wait_forwarding(pid)


def _catchable_signals() -> list:
    """Every signal a handler could be set for: the caller's ignored or blocked
    signals must not reach a command that runs as root."""
    return [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]


def _default_signals() -> None:
    """In a forked child: default dispositions and an empty mask before exec."""
    for sig in _catchable_signals():
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _lower_nofile(limit: int) -> None:
    """oslo's RLIMIT_NOFILE dance: close fds above the limit, lower the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    sensible = min(limit, soft)
    if soft > sensible:
        for entry in os.listdir("/proc/self/fd"):
            fd = int(entry)
            if fd >= sensible:
                try:
                    os.close(fd)
                except OSError:
                    pass
        resource.setrlimit(resource.RLIMIT_NOFILE, (sensible, hard))


def explain(loaded: Loaded, argv: list[str]) -> int:
    """Print the decision, the winning rule and every candidate; run nothing."""
    decision = _bounded_match(loaded.index, argv)
    if decision is None:
        from privsepd.cli.rootwrap_policy import RC_UNAUTHORIZED

        raise _Exit(RC_UNAUTHORIZED, _timeout_denial(argv))
    out = sys.stdout.write
    out(f"command:  {argv!r}\n")
    out(f"decision: {'allow' if decision.allowed else 'deny'} ({decision.outcome})\n")
    out(f"reason:   {decision.reason}\n")
    if decision.filter is not None:
        f = decision.filter
        out(f"rule:     {f.source.path}:{f.source.line} {f.source.name} ({f.kind})\n")
    if decision.allowed:
        from privsepd.helper.execute import plan_for

        plan = plan_for(decision, locale_from=os.environ)
        caps = ",".join(sorted(plan.caps)) if loaded.native else "all (rootwrap INI rule)"
        if loaded.native and not plan.caps:
            caps = "none"
        if plan.uid != 0 and not loaded.native:
            caps = "none"
        out(f"exec:     {list(decision.command)!r}\n")
        out(
            f"run_as:   {plan.user.pw_name} (uid {plan.uid}, gid {plan.gid}, "
            f"groups {list(plan.groups)})\n"
        )
        out(f"env:      {decision.env!r}\n")
        out(f"caps:     {caps}\n")
    else:
        out(f"message:  {decision.message}\n")
    for cand in decision.trace:
        f = cand.filter
        verdict = "matched" if cand.miss is None else str(cand.miss)
        out(f"  candidate {f.source.path}:{f.source.line} {f.source.name} ({f.kind}): {verdict}\n")
    out(f"exit:     {0 if decision.allowed else decision.rc}\n")
    return 0 if decision.allowed else decision.rc


def _parse(args: list[str]) -> tuple[bool, str | None, list[str]]:
    explain_mode = False
    cache_dir: str | None = DEFAULT_CACHE_DIR
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--explain":
            explain_mode = True
        elif opt == "--no-cache":
            cache_dir = None
        elif opt == "--cache-dir" and args:
            cache_dir = args.pop(0)
        elif opt == "--":
            break
        else:
            raise _Exit(RC_NOCOMMAND, f"unknown option {opt!r}; {USAGE}")
    return explain_mode, cache_dir, args


def main(argv: list[str] | None = None) -> int:
    """The shim: decide and run; returns the exit code (oslo's codes). See console_main."""
    args = list(sys.argv if argv is None else argv)
    execname = args.pop(0) if args else "privsepd-rootwrap"
    if args[:1] in (["--help"], ["-h"]):
        sys.stdout.write(HELP)
        return 0
    if args[:1] == ["--version"]:
        from privsepd import __version__

        sys.stdout.write(f"privsepd-rootwrap {__version__}\n")
        return 0
    try:
        return _main(execname, args)
    except _Exit as exc:
        if exc.message:
            sys.stderr.write(f"{execname}: {exc.message}\n")
        if exc.detail and exc.detail != exc.message:
            sys.stderr.write(f"{execname}: {exc.detail}\n")
        sys.stderr.flush()
        return exc.code


def console_main() -> int:
    """The ``privsepd-rootwrap`` console script: :func:`main`, then leave at once.

    Interpreter finalization (tearing down every module, a last garbage
    collection) costs more CPU than the shim's own work, and by the time
    :func:`main` returns there is nothing left for it to do: the command was
    waited for, audit records went out through ``os.write``/``send`` (no
    buffers), and this path starts no thread and registers no atexit hook.
    So stdio is flushed and the process calls ``os._exit`` with the code. Whenever
    that is not certain (a flush fails, an atexit hook or threading is
    loaded: the full-load path imports logging), Python exits normally.
    """
    rc = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 -- let the normal exit report it
        return rc
    import atexit

    pending = getattr(atexit, "_ncallbacks", None)  # CPython; elsewhere: exit normally
    if pending is None or pending() or "threading" in sys.modules:
        return rc
    os._exit(rc & 0xFF)


# Variables that change what a Python interpreter loads or executes. sudo's
# default env_reset removes them all; if one reaches us under sudo, the
# sudoers policy lets the caller steer a root interpreter, and it is already
# too late to undo (they act during start-up): refuse loudly instead.
_INTERPRETER_ENV = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONPYCACHEPREFIX",
        "PYTHONPLATLIBDIR",
        "PYTHONUSERBASE",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "PYTHONWARNINGS",  # a warning category names a module to import
        "PYTHONIOENCODING",
        "PYTHONEXECUTABLE",
        "PYTHONBREAKPOINT",
    }
)


def sudo_leaked_variables() -> list[str]:
    """Interpreter-steering variables that reached this root process via sudo."""
    if "SUDO_UID" not in os.environ or os.geteuid() != 0 or sys.flags.ignore_environment:
        return []
    return sorted(name for name in os.environ if name in _INTERPRETER_ENV or name.startswith("LD_"))


def _check_sudo_environment() -> None:
    leaked = sudo_leaked_variables()
    if leaked:
        raise _Exit(
            RC_BADCONFIG,
            f"refusing to run: {', '.join(leaked)} reached a root interpreter through sudo",
            "keep sudo's 'Defaults env_reset' and never env_keep PYTHON* or LD_* variables",
        )


def _pin_paths(plan, userargs: list[str], config, execname: str) -> None:  # noqa: ANN001
    """Open every path argument beneath its base; the command gets /proc/self/fd/N.

    A path that cannot be pinned (a component was swapped for a symlink
    after the decision, ...) is a denial, exit 99: nothing runs.
    """
    if not plan.decision.path_arguments:
        return
    from privsepd.paths import PathRefused, pin_command

    try:
        plan.argv, fds = pin_command(plan.decision, plan.argv)
    except PathRefused as exc:
        from privsepd.cli.rootwrap_policy import RC_UNAUTHORIZED

        msg = f"Unauthorized command: {' '.join(userargs)} ({exc.detail})"
        if config is not None:
            _syslog(config, execname, 40, msg)
        _audit(decision="deny", argv=userargs, reason=exc.detail, rc=RC_UNAUTHORIZED)
        raise _Exit(RC_UNAUTHORIZED, msg) from None
    plan.fds = tuple(fds)


#: CPU seconds one decision may take. Real decisions take milliseconds; a
#: rootwrap pattern with nested repeats (``(a+)+$``, loaded for oslo
#: compatibility) can take hours on a crafted argument, as root, and sudo's
#: caller cannot signal the shim. ITIMER_PROF counts this process's CPU time,
#: so a loaded machine does not turn a slow-but-honest decision into a denial.
DECISION_CPU_SECONDS = 1.0


class _DecisionTimeout(BaseException):
    """Raised by the SIGPROF handler inside a match; not an Exception, so no
    ``except Exception`` in the matcher can turn it into a verdict."""


def _bounded_match(index, argv: list[str]):  # noqa: ANN001, ANN202
    """``index.match(argv)``, or None when it used DECISION_CPU_SECONDS of CPU.

    re's matcher checks for signals every few thousand steps (CPython 3.9 to
    3.13), so the handler's exception interrupts a backtracking match. The
    handler is disarmed before the timer is cancelled: a SIGPROF already in
    flight then does nothing.
    """
    armed = [True]

    def expire(signum, frame):  # noqa: ANN001
        if armed[0]:
            raise _DecisionTimeout

    previous = signal.signal(signal.SIGPROF, expire)
    try:
        try:
            signal.setitimer(signal.ITIMER_PROF, DECISION_CPU_SECONDS)
            return index.match(argv)
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_PROF, 0)
            if previous is not None:  # None: a handler installed outside Python; keep ours
                signal.signal(signal.SIGPROF, previous)
    except _DecisionTimeout:
        return None


def _timeout_denial(userargs: list[str]) -> str:
    return (
        f"Unauthorized command: {' '.join(userargs)} (deciding took more than "
        f"{DECISION_CPU_SECONDS:g} s of CPU: a filter's regex backtracks on this argument)"
    )


def _main(execname: str, args: list[str]) -> int:
    _check_sudo_environment()
    # A caller that ignores SIGCHLD would make waitpid fail (children are
    # auto-reaped) and the command's exit status would be lost.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    explain_mode, cache_dir, args = _parse(args)
    if len(args) < 2:
        raise _Exit(RC_NOCOMMAND, "No command specified")
    conf, userargs = args[0], args[1:]
    if explain_mode:
        return explain(load_full(conf), userargs)
    if os.geteuid() != 0:
        cache_dir = None  # only root may write or trust the cache
    loaded = load(conf, userargs[0], cache_dir)
    config = loaded.config
    if config is not None:
        _lower_nofile(config.rlimit_nofile)
    decision = _bounded_match(loaded.index, userargs)
    if decision is None:
        from privsepd.cli.rootwrap_policy import RC_UNAUTHORIZED

        msg = _timeout_denial(userargs)
        if config is not None:
            _syslog(config, execname, 40, msg)
        reason = f"decision exceeded {DECISION_CPU_SECONDS:g} s of CPU (regex backtracking)"
        from privsepd.errors import AuditError

        try:
            _audit(decision="deny", argv=userargs, reason=reason, rc=RC_UNAUTHORIZED)
        except AuditError as exc:
            raise _Exit(RC_UNAUTHORIZED, msg, f"and the denial was not audited: {exc}") from None
        raise _Exit(RC_UNAUTHORIZED, msg)
    if not decision.allowed:
        msg = decision.message
        if config is not None:
            _syslog(config, execname, 40, msg)
        from privsepd.errors import AuditError

        try:
            _audit(decision="deny", argv=userargs, reason=decision.reason, rc=decision.rc)
        except AuditError as exc:
            raise _Exit(decision.rc, msg, f"and the denial was not audited: {exc}") from None
        raise _Exit(decision.rc, msg)
    from privsepd.helper.execute import plan_for

    plan = plan_for(decision, locale_from=os.environ)
    _pin_paths(plan, userargs, config, execname)
    if config is not None:
        import pwd

        _syslog(
            config,
            execname,
            20,
            f"({_getlogin()} > {pwd.getpwuid(os.getuid())[0]}) Executing "
            f"{list(decision.command)} (filter match = {decision.filter.name})",
        )
    rule = f"{decision.filter.source.path}:{decision.filter.source.line} {decision.filter.name}"
    from privsepd.errors import AuditError

    try:
        # Before the command runs: nothing runs as root without a record.
        _audit(decision="allow", argv=userargs, rule=rule, run_as=plan.user.pw_name)
    except AuditError as exc:
        raise _Exit(RC_CANNOT_EXECUTE, f"Cannot execute {plan.argv[0]}: {exc}") from None
    try:
        rc = run_plan(plan, loaded.native)
    except _Exit as exc:
        _audit_outcome(decision="error", argv=userargs, rule=rule, error=exc.message)
        raise
    _audit_outcome(decision="done", argv=userargs, rule=rule, rc=rc)
    return rc
