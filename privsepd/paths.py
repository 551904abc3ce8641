"""Open a caller's path beneath a policy base so that no swapped component leads out.

Checking a path string and then letting something else resolve it again is
a race: a user who can write anywhere on the path swaps a directory for a
symlink (``renameat2(RENAME_EXCHANGE)`` in a loop) between the two
resolutions. So the check is followed by an *open* that holds on to what
was judged, done by the kernel in one step:

1. The base is opened from ``/`` one component at a time
   (``O_PATH|O_NOFOLLOW``); a symlink on the way is followed only out of a
   directory that root controls (root-owned, not group/world-writable), so
   nobody else can point the base elsewhere.
2. The caller's value is resolved (``realpath``) and must lie under the
   base's real path; its remainder is opened from the base descriptor with
   ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``. If anything was
   swapped in between, the kernel refuses (a symlink, or an escape) and
   the request is denied: a racing user can make it fail, never succeed
   elsewhere.
3. The result is a descriptor: an entrypoint reads or writes through it
   (:meth:`privsepd.constraints.PathUnder.open`), a command gets it as
   ``/proc/self/fd/N`` (:func:`pin_command`).

A path that does not exist yet (``must_exist = false``) cannot be opened;
its deepest existing directory is, and the command gets
``/proc/self/fd/N/rest``. The rest is then named in a directory that must
not be writable by anyone but root or this process's own user, since a
symlink planted there after the check would be followed.
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # not typing: privsepd-rootwrap imports this module
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = [
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "STRICT",
    "PathRefused",
    "Pinned",
    "inheritable_o_path",
    "make_inheritable",
    "open_base",
    "open_beneath",
    "openat2",
    "pin",
    "pin_command",
]

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
#: What every open below a base uses: stay beneath it, follow no link at all.
STRICT = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
# Linux's (asm-generic) value; PyPy 3.9's os module lacks the name.
O_PATH = getattr(os, "O_PATH", 0o10000000)

NR_OPENAT2 = 437  # one number on every asm-generic architecture (x86_64, aarch64, ...)
_EAGAIN_RETRIES = 32
_MAXSYMLINKS = 40

_syscall: Any = None


def _bind() -> Any:
    """``syscall(2)`` from libc, bound on first use.

    ctypes rather than cffi: cffi's cdef parser costs ~100 ms on first use,
    and ``privsepd-rootwrap`` (one run per command, under sudo) would pay
    it on every command with a path argument; ctypes loads in ~5 ms.
    """
    global _syscall
    if _syscall is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
        fn.restype = ctypes.c_long
        _syscall = fn
    return _syscall


def warm_up() -> None:
    """Bind openat2 now, while the process can still read ctypes' files.

    A helper calls this before it scopes: under Landlock (``landlock=``,
    ``files=``) an entrypoint's first ``PathUnder.open()`` could not import
    ctypes any more.
    """
    _bind()


class PathRefused(Exception):
    """A path could not be opened beneath its base; ``detail`` says why."""

    def __init__(self, detail: str, errno_: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errno = errno_


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """``openat2(2)``; O_CLOEXEC is always added. Raises OSError with errno.

    EAGAIN (a rename raced a ``..`` lookup under RESOLVE_BENEATH) is retried
    a bounded number of times.
    """
    import ctypes

    syscall = _bind()
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if not (flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)):
        mode = 0  # openat2 refuses a mode it would not use
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise OSError(errno.EINVAL, "path contains a NUL byte")
    how = (ctypes.c_uint64 * 3)(flags | os.O_CLOEXEC, mode, resolve)  # struct open_how
    for _ in range(_EAGAIN_RETRIES):
        fd = syscall(
            ctypes.c_long(NR_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, f"openat2: {os.strerror(err)}", path)
    raise OSError(errno.EAGAIN, "openat2: path kept changing while it was resolved", path)


def _root_controlled(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_base(prefix: str) -> tuple[int, str]:
    """O_PATH descriptor of the directory ``prefix`` and its real path.

    Walked from ``/`` without following any symlink that lives in a
    directory someone other than root can write: such a user could point
    the base anywhere. The base itself may be anyone's.
    """
    if not prefix.startswith("/") or "\0" in prefix:
        raise PathRefused(f"base {prefix!r} is not an absolute path")
    chain: list[tuple[int, str, os.stat_result]] = []
    try:
        fd = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        chain.append((fd, "/", os.fstat(fd)))
        pending = [c for c in reversed(prefix.split("/")) if c and c != "."]
        links = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if len(chain) > 1:
                    os.close(chain.pop()[0])
                continue
            dir_fd, dir_path, dir_st = chain[-1]
            where = dir_path.rstrip("/") + "/" + name
            try:
                fd = os.open(name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                raise PathRefused(f"base {prefix!r}: {where}: {exc.strerror}", exc.errno) from None
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                try:
                    if not _root_controlled(dir_st):
                        raise PathRefused(
                            f"base {prefix!r} passes through symlink {where} in a directory "
                            f"that uid {dir_st.st_uid} or others can change"
                        )
                    links += 1
                    if links > _MAXSYMLINKS:
                        raise PathRefused(f"base {prefix!r}: too many symlinks", errno.ELOOP)
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                if target.startswith("/"):
                    while len(chain) > 1:
                        os.close(chain.pop()[0])
                pending.extend(c for c in reversed(target.split("/")) if c and c != ".")
                continue
            chain.append((fd, where, st))
            if pending and not stat.S_ISDIR(st.st_mode):
                raise PathRefused(f"base {prefix!r}: {where} is not a directory", errno.ENOTDIR)
        fd, real, st = chain.pop()
        if not stat.S_ISDIR(st.st_mode):
            chain.append((fd, real, st))
            raise PathRefused(f"base {prefix!r} is not a directory", errno.ENOTDIR)
        return fd, real
    finally:
        for fd, _, _ in chain:
            os.close(fd)


def _check_value(value: object) -> None:
    if type(value) is not str or not value.startswith("/") or "\0" in value:
        raise PathRefused(f"{value!r} is not an absolute path without NUL bytes")


def _relative(base_real: str, value: str) -> str:
    """The part of ``value``'s real path below ``base_real`` ('' for the base itself)."""
    try:
        real = os.path.realpath(value)
    except OSError as exc:  # realpath's own readlink loses races with EINVAL
        raise _changed(value, exc) from None
    if real == base_real:
        return ""
    lead = base_real.rstrip("/") + "/"
    if not real.startswith(lead):
        raise PathRefused(f"{value!r} resolves to {real!r}, outside {base_real!r}")
    return real[len(lead) :]


def _changed(value: str, exc: OSError) -> PathRefused:
    if exc.errno in (errno.ELOOP, errno.EXDEV, errno.EAGAIN):
        why = "a symlink or an escape appeared"
    elif exc.errno == errno.ENOSYS:
        return PathRefused("openat2 is not available (Linux 5.6 or later is needed)", exc.errno)
    else:
        why = exc.strerror or str(exc)
    return PathRefused(f"{value!r} changed while it was being opened ({why})", exc.errno)


def open_beneath(prefix: str, value: str, flags: int, mode: int = 0o666) -> int:
    """Open ``value`` (an absolute path under ``prefix``) with ``flags``, race-free.

    ``O_NOFOLLOW`` is added: the last component is never a symlink either.
    With ``O_CREAT`` the file may be new; its directory must exist.
    """
    _check_value(value)
    base_fd, base_real = open_base(prefix)
    try:
        rel = _relative(base_real, value)
        try:
            return openat2(base_fd, rel or ".", flags | os.O_NOFOLLOW, mode, STRICT)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise PathRefused(f"{value!r} does not exist", exc.errno) from None
            raise _changed(value, exc) from None
    finally:
        os.close(base_fd)


class Pinned:
    """One path argument pinned for a command: an fd and the name the command gets."""

    __slots__ = ("fd", "tail")

    def __init__(self, fd: int, tail: str = "") -> None:
        self.fd = fd
        self.tail = tail

    @property
    def name(self) -> str:
        """``/proc/self/fd/N`` (a file), ``/proc/self/fd/N/.`` (a directory) or
        ``/proc/self/fd/N/rest`` (a name to create in a pinned directory)."""
        return f"/proc/self/fd/{self.fd}" + (f"/{self.tail}" if self.tail else "")


def pin(prefix: str, value: str, must_exist: bool = False) -> Pinned:
    """An O_PATH descriptor on what ``value`` names under ``prefix``, for a command.

    An existing path is pinned itself. A missing one (unless ``must_exist``)
    pins its deepest existing directory, which must then be controlled by
    root or by this process's user: anyone else could plant a symlink under
    the missing name after this check.
    """
    _check_value(value)
    base_fd, base_real = open_base(prefix)
    try:
        rel = _relative(base_real, value)
        flags = O_PATH | os.O_NOFOLLOW
        try:
            fd = openat2(base_fd, rel or ".", flags, 0, STRICT)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise _changed(value, exc) from None
            if must_exist:
                raise PathRefused(f"{value!r} does not exist", exc.errno) from None
            return _pin_parent(base_fd, rel, value)
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):  # realpath resolved it: it was swapped in
            os.close(fd)
            raise PathRefused(f"{value!r} changed while it was being opened (now a symlink)")
        # A directory is named /proc/self/fd/N/. so that programs that do not
        # follow a symlink operand (du, ls, find) still see the directory.
        return Pinned(fd, "." if stat.S_ISDIR(mode) else "")
    finally:
        os.close(base_fd)


def _pin_parent(base_fd: int, rel: str, value: str) -> Pinned:
    parts = rel.split("/")
    for k in range(len(parts) - 1, -1, -1):
        try:
            fd = openat2(base_fd, "/".join(parts[:k]) or ".", O_PATH | os.O_DIRECTORY, 0, STRICT)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue
            raise _changed(value, exc) from None
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.close(fd)
            raise PathRefused(
                f"{value!r} does not exist, and uid {st.st_uid} or others can write the "
                "directory it would be created in: a symlink planted there after this check "
                "would be followed; create it first, or use a function with PathUnder.open()"
            )
        return Pinned(fd, "/".join(parts[k:]))
    raise PathRefused(f"{value!r}: its base vanished while it was being opened")


# A pinned path reaches a command as an inherited O_PATH descriptor. PyPy 3.9
# clears close-on-exec with ioctl(FIONCLEX), which such a descriptor refuses
# (EBADF); CPython falls back to fcntl.

_inheritable_o_path: bool | None = None  # probed once


def inheritable_o_path() -> bool:
    """Whether ``os.set_inheritable`` works on an O_PATH descriptor here.

    Where it does not, and the descriptor is handed over by code privsepd
    does not control (subprocess's ``pass_fds``), a command with a path
    argument must be refused up front, saying why, not fail in the spawn.
    """
    global _inheritable_o_path
    if _inheritable_o_path is None:
        fd = os.open("/", O_PATH | os.O_CLOEXEC)
        try:
            os.set_inheritable(fd, True)
            _inheritable_o_path = True
        except OSError:
            _inheritable_o_path = False
        finally:
            os.close(fd)
    return _inheritable_o_path


def make_inheritable(fd: int) -> None:
    """``os.set_inheritable(fd, True)``, through fcntl where that fails (an
    O_PATH descriptor on PyPy 3.9): for code that execs the command itself."""
    try:
        os.set_inheritable(fd, True)
    except OSError:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) & ~fcntl.FD_CLOEXEC)


def pin_command(decision: Any, argv: Sequence[str]) -> tuple[list[str], list[int]]:
    """``argv`` (the decision's command) with every path argument pinned.

    Returns the argv to execute and the descriptors the command must
    inherit (the caller closes them after the spawn). Raises PathRefused
    (after closing what it opened) when a path cannot be pinned.
    """
    positions = decision.path_arguments
    if not positions:
        return list(argv), []
    values = _argument_values(decision, argv)
    out = list(argv)
    fds: list[int] = []
    try:
        for i in sorted(positions):
            base, must_exist = positions[i]
            try:
                pinned = pin(base, values[i], must_exist)
            except PathRefused as exc:
                raise PathRefused(f"argument {i}: {exc.detail}", exc.errno) from None
            fds.append(pinned.fd)
            out[i] = pinned.name
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return out, fds


def _argument_values(decision: Any, argv: Sequence[str]) -> list[str]:
    """The caller's words at each position of the final command (as judged).

    Filters with path arguments (and chaining ones) keep one command word
    per argv word, so the positions line up with the caller's argv.
    """
    values = list(decision.argv)
    if len(values) != len(argv):
        raise PathRefused("the command's words do not line up with the judged arguments")
    return values
