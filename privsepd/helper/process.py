"""Process state a helper must not inherit from whoever started it.

A spawned helper (``sudo privsepd helper``) inherits through sudo the
caller's resource limits, signal dispositions and mask, and umask; a forked
helper inherits the service's environment. A caller that sets
``RLIMIT_FSIZE=1024`` and ignores ``SIGXFSZ`` makes every audit write fail;
one that blocks ``SIGTERM`` or lowers ``RLIMIT_NOFILE`` to 3 breaks the
helper in other ways. :func:`reset_inherited_state` puts all of it back to
fixed values before the helper does anything else, and refuses (naming the
limit) when a limit cannot be restored, e.g. without ``CAP_SYS_RESOURCE``.
"""

from __future__ import annotations

import os
import resource
import signal

from privsepd.errors import ScopingError

__all__ = [
    "DEFAULT_RLIMITS",
    "MINIMUM_RLIMITS",
    "reset_inherited_state",
    "reset_rlimits",
    "scrub_environment",
]

_INF = resource.RLIM_INFINITY

#: (soft, hard) every spawned helper asks for: the values of a fresh systemd
#: service, so nothing the caller chose survives.
DEFAULT_RLIMITS: dict[str, tuple[int, int]] = {
    "RLIMIT_CPU": (_INF, _INF),
    "RLIMIT_FSIZE": (_INF, _INF),
    "RLIMIT_DATA": (_INF, _INF),
    "RLIMIT_STACK": (8 * 1024 * 1024, _INF),
    "RLIMIT_CORE": (0, 0),  # a root helper's memory holds what it read as root
    "RLIMIT_RSS": (_INF, _INF),
    "RLIMIT_NPROC": (_INF, _INF),
    "RLIMIT_NOFILE": (1024, 524288),
    "RLIMIT_MEMLOCK": (8 * 1024 * 1024, 8 * 1024 * 1024),
    "RLIMIT_AS": (_INF, _INF),
    "RLIMIT_LOCKS": (_INF, _INF),
    "RLIMIT_MSGQUEUE": (819200, 819200),
    "RLIMIT_NICE": (0, 0),
    "RLIMIT_RTPRIO": (0, 0),
    "RLIMIT_RTTIME": (_INF, _INF),
}

#: The least soft limit a helper serves with. Without CAP_SYS_RESOURCE a hard
#: limit cannot be raised back; a lower value than these is refused, since it
#: lets the caller fail the helper's audit writes (FSIZE), kill it mid-call
#: (CPU, RTTIME) or starve it of memory, descriptors or threads.
MINIMUM_RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": _INF,
    "RLIMIT_FSIZE": _INF,
    "RLIMIT_DATA": _INF,
    "RLIMIT_AS": _INF,
    "RLIMIT_RTTIME": _INF,
    "RLIMIT_STACK": 8 * 1024 * 1024,
    "RLIMIT_NOFILE": 1024,
    "RLIMIT_NPROC": 1024,
    "RLIMIT_LOCKS": 1024,
    "RLIMIT_SIGPENDING": 1024,
}


def _show(value: int) -> str:
    return "unlimited" if value == _INF else str(value)


def _below(value: int, minimum: int) -> bool:
    """value < minimum, where RLIM_INFINITY is larger than any number."""
    if value == _INF:
        return False
    return minimum == _INF or value < minimum


def _lowest(a: int, b: int) -> int:
    return b if _below(b, a) else a


def _sigpending_default() -> tuple[int, int] | None:
    """RLIMIT_SIGPENDING is sized by the kernel from memory: take init's value."""
    try:
        with open("/proc/1/limits") as f:
            for line in f:
                if line.startswith("Max pending signals"):
                    soft, hard = line.split()[3:5]
                    return (
                        _INF if soft == "unlimited" else int(soft),
                        _INF if hard == "unlimited" else int(hard),
                    )
    except (OSError, ValueError):
        pass
    return None


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024


def reset_rlimits() -> None:
    """Set every resource limit to :data:`DEFAULT_RLIMITS`, as far as the kernel lets us.

    Where a hard limit cannot be raised (no CAP_SYS_RESOURCE), the soft
    limit goes up to that hard limit; if the result is still below
    :data:`MINIMUM_RLIMITS`, raise ScopingError naming every such limit.
    """
    wanted = dict(DEFAULT_RLIMITS)
    soft, hard = wanted["RLIMIT_NOFILE"]
    wanted["RLIMIT_NOFILE"] = (soft, min(hard, _nr_open()))
    pending = _sigpending_default()
    if pending is not None:
        wanted["RLIMIT_SIGPENDING"] = pending
    failed = []
    for name, (soft, hard) in wanted.items():
        which = getattr(resource, name, None)
        if which is None:
            continue
        error = ""
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as exc:
            # Cannot raise the hard limit: get as close as it allows.
            error = getattr(exc, "strerror", None) or str(exc)
            _, cur_hard = resource.getrlimit(which)
            try:
                resource.setrlimit(which, (_lowest(soft, cur_hard), _lowest(hard, cur_hard)))
            except (OSError, ValueError):
                pass
        got_soft, got_hard = resource.getrlimit(which)
        minimum = MINIMUM_RLIMITS.get(name)
        if minimum is not None and _below(got_soft, minimum):
            failed.append(
                f"{name} is {_show(got_soft)}/{_show(got_hard)}, below {_show(minimum)}, and "
                f"cannot be raised to {_show(soft)}/{_show(hard)} ({error or 'refused'})"
            )
    if failed:
        raise ScopingError(
            "refusing to serve with inherited resource limits: "
            + "; ".join(failed)
            + " (raising a hard limit needs CAP_SYS_RESOURCE)"
        )


_NR_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}
_SIG_IGN = 1


def _unignore_reserved_signals() -> None:
    """Signals the C library keeps for itself (32, 33) are out of Python's reach.

    One the caller ignored stays ignored across every exec (posix_spawn
    even leaves them so), so reset them with the raw syscall -- only when
    ignored, never over a handler the C library installed.
    """
    from privsepd.helper import kernel

    number = _NR_RT_SIGACTION.get(kernel.native_arch())
    if number is None:
        return
    valid = signal.valid_signals()
    # A zeroed kernel sigaction is SIG_DFL, no flags, an empty mask (the
    # layout differs by arch, but all zeros means the same on each).
    default = kernel.ffi.new("char[]", 64)
    old = kernel.ffi.new("unsigned long[]", 8)
    for sig in range(1, signal.NSIG):
        if sig in valid or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            kernel.syscall(number, sig, 0, _address(kernel, old), 8)
            if old[0] == _SIG_IGN:
                kernel.syscall(number, sig, _address(kernel, default), 0, 8)
        except OSError:
            pass


def _address(kernel: object, buffer: object) -> int:
    return int(kernel.ffi.cast("intptr_t", buffer))  # type: ignore[attr-defined]


def reset_signals() -> None:
    """Default disposition for every signal, and an empty signal mask."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    _unignore_reserved_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def scrub_environment(uid: int) -> None:
    """Replace os.environ with what a command would get (execute.sanitized_env).

    A fixed PATH, HOME/USER/LOGNAME of ``uid``, and plain locale variables:
    loader and interpreter variables of whoever started the helper
    (LD_PRELOAD, PYTHONPATH, BASH_ENV, ...) are gone for everything the
    helper runs from here on.
    """
    import pwd

    from privsepd.helper.execute import sanitized_env

    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        user = pwd.struct_passwd((str(uid), "x", uid, uid, "", "/", "/usr/sbin/nologin"))
    env = sanitized_env(user, locale_from=dict(os.environ))
    os.environ.clear()
    os.environ.update(env)


def reset_inherited_state() -> None:
    """Signals, mask, umask, environment and resource limits to fixed values.

    Run first thing in a spawned helper. Raises ScopingError naming each
    limit that could not be restored; the helper must then refuse to serve.
    """
    reset_signals()
    os.umask(0o022)
    scrub_environment(os.getuid())
    reset_rlimits()
