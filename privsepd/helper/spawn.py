"""posix_spawn through cffi: the GIL is released while the child starts.

CPython's ``os.posix_spawn`` holds the GIL for the whole call, and with
glibc's vfork-style spawn the call lasts until the child has exec'd (0.1 to
0.6 ms for ``/bin/true`` here): every other helper thread -- the reader,
other commands collecting their output -- stands still meanwhile, so
commands from concurrent callers were serialised on their start. cffi
releases the GIL around each C call. glibc's file actions also do what
``os.posix_spawn`` cannot: ``closefrom`` (every descriptor above 2 closed in
the child, whatever its close-on-exec flag) and ``chdir``, so no scan of
``/proc/self/fd`` and no check of the helper's working directory per command.

Available when libc has ``posix_spawn_file_actions_addclosefrom_np`` (glibc
2.34+) and ``posix_spawn_file_actions_addchdir_np`` (2.29+); otherwise
:data:`AVAILABLE` is False and the runner uses its other paths.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence

import cffi

__all__ = ["AVAILABLE", "spawn"]

_ffi = cffi.FFI()
# The glibc types are opaque here: they live in buffers larger than glibc's
# (80 and 336 bytes on x86-64; sigset_t 128), aligned for any member.
_ffi.cdef(
    """
    typedef int pid_t;
    typedef unsigned int mode_t;
    int posix_spawn_file_actions_init(void *fa);
    int posix_spawn_file_actions_destroy(void *fa);
    int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd);
    int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag,
                                         mode_t mode);
    int posix_spawn_file_actions_addclosefrom_np(void *fa, int from);
    int posix_spawn_file_actions_addchdir_np(void *fa, const char *path);
    int posix_spawnattr_init(void *attr);
    int posix_spawnattr_destroy(void *attr);
    int posix_spawnattr_setflags(void *attr, short flags);
    int posix_spawnattr_setsigmask(void *attr, const void *sigmask);
    int posix_spawnattr_setsigdefault(void *attr, const void *sigdefault);
    int sigemptyset(void *set);
    int sigaddset(void *set, int signum);
    int posix_spawn(pid_t *pid, const char *path, const void *file_actions, const void *attrp,
                    char *const argv[], char *const envp[]);
    """
)
_BUF = "long long[128]"  # 1 KiB, 8-byte aligned

# glibc <spawn.h>
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80

#: Signals whose disposition the command gets reset to the default (the
#: helper ignores some of them; ignored signals would survive the exec).
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(rc, f"{what}: {os.strerror(rc)}")


def _load():
    try:
        lib = _ffi.dlopen(None)
        for name in (
            "posix_spawn",
            "posix_spawn_file_actions_addclosefrom_np",
            "posix_spawn_file_actions_addchdir_np",
            "posix_spawnattr_setsigdefault",
        ):
            getattr(lib, name)  # resolved now, before any fork or scoping
    except (OSError, AttributeError):
        return None
    return lib


def _attributes(lib):
    """The one spawn attribute set every command uses (posix_spawn only reads it).

    Built once: each cffi call releases and retakes the GIL, a thread switch
    when other helper threads are waiting for it.
    """
    attr = _ffi.new(_BUF)
    mask = _ffi.new(_BUF)
    defaults = _ffi.new(_BUF)
    _check(lib.posix_spawnattr_init(attr), "posix_spawnattr_init")
    lib.sigemptyset(mask)
    lib.sigemptyset(defaults)
    for sig in RESET_SIGNALS:
        lib.sigaddset(defaults, int(sig))
    _check(lib.posix_spawnattr_setsigmask(attr, mask), "setsigmask")
    _check(lib.posix_spawnattr_setsigdefault(attr, defaults), "setsigdefault")
    flags = _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGMASK | _POSIX_SPAWN_SETSIGDEF
    _check(lib.posix_spawnattr_setflags(attr, flags), "setflags")
    return attr


_lib = _load()
_ATTR = _attributes(_lib) if _lib is not None else None
#: True when this libc can spawn the way :func:`spawn` needs.
AVAILABLE = _lib is not None and os.uname().sysname == "Linux"


def _strings(items: Sequence[bytes]):
    """A NULL-terminated ``char *[]`` and the one buffer it points into (keep both alive).

    One buffer for all the strings: two allocations per array instead of
    one per string (items are checked free of null bytes beforehand).
    """
    buf = _ffi.new("char[]", b"\0".join(items) + b"\0")
    ptrs = _ffi.new("char *[]", len(items) + 1)
    offset = 0
    for i, item in enumerate(items):
        ptrs[i] = buf + offset
        offset += len(item) + 1
    return ptrs, buf


# Commands mostly get the same few environments and, since pipe descriptors
# are reused lowest-first, the same few descriptor triples: both are built
# once and reused (posix_spawn only reads them, so threads may share them).
# Each build costs cffi calls that release and retake the GIL, and glibc's
# adddup2/addopen read RLIMIT_NOFILE once each. Bounded: cleared when full.
_CACHE_MAX = 64
_envs: dict = {}
_actions: dict = {}


def _environment(env: Mapping[str, str]):
    """The ``char *envp[]`` of ``env`` (validated), from the cache when seen before."""
    key = tuple(env.items())
    cached = _envs.get(key)
    if cached is not None:
        return cached
    fsencode = os.fsencode
    entries = []
    for name, value in key:
        k, v = fsencode(name), fsencode(value)
        if b"\0" in k or b"\0" in v or b"=" in k or not k:
            raise ValueError(f"invalid environment variable {name!r}")
        entries.append(k + b"=" + v)
    built = _strings(entries)
    if len(_envs) >= _CACHE_MAX:
        _envs.clear()
    _envs[key] = built
    return built


def _file_actions(stdin: int | None, stdout: int, stderr: int):
    """File actions for this descriptor triple, closefrom(3) and chdir("/"); cached."""
    key = (stdin, stdout, stderr)
    fa = _actions.get(key)
    if fa is not None:
        return fa
    lib = _lib
    fa = _ffi.gc(_ffi.new(_BUF), lib.posix_spawn_file_actions_destroy)
    _check(lib.posix_spawn_file_actions_init(fa), "posix_spawn_file_actions_init")
    if stdin is None:
        _check(
            lib.posix_spawn_file_actions_addopen(fa, 0, b"/dev/null", os.O_RDONLY, 0),
            "addopen",
        )
    else:
        _check(lib.posix_spawn_file_actions_adddup2(fa, stdin, 0), "adddup2")
    _check(lib.posix_spawn_file_actions_adddup2(fa, stdout, 1), "adddup2")
    _check(lib.posix_spawn_file_actions_adddup2(fa, stderr, 2), "adddup2")
    _check(lib.posix_spawn_file_actions_addclosefrom_np(fa, 3), "addclosefrom_np")
    _check(lib.posix_spawn_file_actions_addchdir_np(fa, b"/"), "addchdir_np")
    if len(_actions) >= _CACHE_MAX:
        _actions.clear()  # (a cleared entry lives on while a spawn still holds it)
    _actions[key] = fa
    return fa


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    stdin: int | None,
    stdout: int,
    stderr: int,
) -> int:
    """Start ``path`` in a new session with exactly fds 0-2; return its pid.

    ``stdin`` None means ``/dev/null``. In the child: descriptors dup'ed onto
    0, 1, 2, every other descriptor closed, working directory ``/``, new
    session, empty signal mask, :data:`RESET_SIGNALS` at their defaults.
    Raises OSError (with the errno of the failed exec, say ENOENT) and
    starts nothing if any step fails.
    """
    if _lib is None:
        raise OSError(0, "posix_spawn with closefrom/chdir is not available in this libc")
    fsencode = os.fsencode
    bpath = fsencode(path)
    bargv = [fsencode(a) for a in argv]
    if b"\0" in bpath or any(b"\0" in a for a in bargv):
        raise ValueError("embedded null byte")
    c_env, env_buf = _environment(env)
    c_argv, argv_buf = _strings(bargv)
    fa = _file_actions(stdin, stdout, stderr)
    pid = _ffi.new("pid_t *")
    # The GIL is released for this call: other threads run while the child
    # starts (vfork semantics block only this thread).
    rc = _lib.posix_spawn(pid, bpath, fa, _ATTR, c_argv, c_env)
    del argv_buf, env_buf
    if rc != 0:
        raise OSError(rc, os.strerror(rc), path)
    return int(pid[0])
