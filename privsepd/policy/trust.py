"""Decide whether a policy file may be trusted, the way sudo does for sudoers.

Policy is what stops a compromised service from doing anything as root, so a
policy file that the service (or any other user) can edit is no policy at
all. A file is trusted only when it, every directory above it up to ``/``,
and every symlink followed on the way are owned by a trusted owner (root),
and no file or directory on that chain is group- or world-writable. The
sticky bit does not excuse a world-writable directory: a user who may create
entries there can plant a policy file before root does.

The walk is done with ``O_PATH | O_NOFOLLOW`` file descriptors, one
component at a time, and every check is an ``fstat`` of the descriptor that
the next step goes through, so nothing can be swapped between the check and
the use. Symlinks are followed (at most 40, like the kernel) only after the
directory holding them has been trusted; their targets are walked the same
way.

The only way to trust anyone but root is the ``trust`` argument, which exists
for unprivileged unit tests. No environment variable, config key or command
line flag reaches it: a service cannot widen what it may trust.
"""

from __future__ import annotations

import os
import pwd
import stat

from privsepd.errors import PolicyError, UnsafePolicyError

__all__ = ["ROOT_ONLY", "Trust", "check_trusted", "read_trusted"]

_MAXSYMLINKS = 40
# Linux's (asm-generic) value; PyPy 3.9's os module lacks the name.
O_PATH = getattr(os, "O_PATH", 0o10000000)
_MAX_POLICY_BYTES = 16 * 1024 * 1024


class Trust:
    """Who may own policy files. Production code always uses ``ROOT_ONLY``.

    Immutable. A plain class, not a dataclass: dataclasses (with inspect,
    ast and dis) cost privsepd-rootwrap ~9 ms of start-up.
    """

    __slots__ = ("owners",)
    owners: frozenset[int]

    def __init__(self, owners: frozenset[int] = frozenset({0})) -> None:
        owners = frozenset(owners)
        for uid in owners:
            if type(uid) is not int or uid < 0:
                raise ValueError(f"trusted owner must be a uid, got {uid!r}")
        object.__setattr__(self, "owners", owners)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Trust is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Trust is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Trust:
            return NotImplemented
        return self.owners == other.owners

    def __hash__(self) -> int:
        return hash(self.owners)

    def __repr__(self) -> str:
        return f"Trust(owners={self.owners!r})"


ROOT_ONLY = Trust()


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "special file"


def _unsafe(origin: str, where: str, st: os.stat_result, why: str) -> UnsafePolicyError:
    mode = stat.S_IMODE(st.st_mode)
    err = UnsafePolicyError(
        f"untrusted: {_kind(st.st_mode)} {where} {why} "
        f"(owner {_user(st.st_uid)}, mode {mode:04o}); "
        "policy and every directory above it must be owned by root and not "
        "writable by group or others",
        path=origin,
    )
    err.offending = where  # type: ignore[attr-defined]
    err.owner = st.st_uid  # type: ignore[attr-defined]
    err.mode = mode  # type: ignore[attr-defined]
    return err


def _check_stat(origin: str, where: str, st: os.stat_result, trust: Trust) -> None:
    if st.st_uid not in trust.owners:
        owners = ", ".join(_user(u) for u in sorted(trust.owners)) or "nobody"
        raise _unsafe(origin, where, st, f"is owned by an untrusted user (trusted: {owners})")
    if stat.S_ISLNK(st.st_mode):
        return  # a symlink's own mode is meaningless; its directory was checked
    if st.st_mode & stat.S_IWOTH:
        sticky = " (the sticky bit does not make it safe)" if st.st_mode & stat.S_ISVTX else ""
        raise _unsafe(origin, where, st, f"is world-writable{sticky}")
    if st.st_mode & stat.S_IWGRP:
        raise _unsafe(origin, where, st, "is group-writable")


def _os_error(origin: str, where: str, exc: OSError) -> PolicyError:
    reason = exc.strerror or str(exc)
    suffix = "" if where == origin else f" (at {where})"
    return PolicyError(f"cannot check policy path: {reason}{suffix}", path=origin)


class _Walk:
    """A checked walk from ``/``; holds the O_PATH fds of the resolved chain."""

    def __init__(self, path: str, trust: Trust):
        self.origin = path
        self.trust = trust
        # (fd, real path, stat) of every element of the resolved path, "/" first
        self.chain: list[tuple[int, str, os.stat_result]] = []

    def close(self) -> None:
        while self.chain:
            os.close(self.chain.pop()[0])

    def run(self) -> None:
        path = self.origin
        if type(path) is not str or not path or "\0" in path:
            raise PolicyError(f"invalid policy path {path!r}")
        if not path.startswith("/"):
            path = os.getcwd() + "/" + path
        self._push("/", os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        pending = _components(path)
        links = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if len(self.chain) > 1:
                    os.close(self.chain.pop()[0])
                continue
            dir_fd, dir_path, _ = self.chain[-1]
            where = _join(dir_path, name)
            try:
                fd = os.open(name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                raise _os_error(self.origin, where, exc) from None
            try:
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode):
                    _check_stat(self.origin, where, st, self.trust)
                    links += 1
                    if links > _MAXSYMLINKS:
                        raise PolicyError(
                            f"cannot check policy path: too many symlinks (at {where})",
                            path=self.origin,
                        )
                    target = os.readlink("", dir_fd=fd)
                    os.close(fd)
                    fd = -1
                    if target.startswith("/"):
                        while len(self.chain) > 1:
                            os.close(self.chain.pop()[0])
                    pending.extend(_components(target))
                    continue
                if pending and not stat.S_ISDIR(st.st_mode):
                    raise PolicyError(
                        f"cannot check policy path: {where} is not a directory",
                        path=self.origin,
                    )
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
            self._push(where, fd, st)

    def _push(self, where: str, fd: int, st: os.stat_result | None = None) -> None:
        try:
            if st is None:
                st = os.fstat(fd)
            _check_stat(self.origin, where, st, self.trust)
        except BaseException:
            os.close(fd)
            raise
        self.chain.append((fd, where, st))


def _components(path: str) -> list[str]:
    """Path components in reverse order (a stack), without empty and '.' parts."""
    return [c for c in reversed(path.split("/")) if c and c != "."]


def _join(dir_path: str, name: str) -> str:
    return dir_path.rstrip("/") + "/" + name


def check_trusted(path: str, trust: Trust = ROOT_ONLY) -> None:
    """Raise UnsafePolicyError unless ``path`` and its whole chain are trusted.

    Works for files and directories (drop-in dirs). Missing paths and other
    OS errors raise PolicyError naming the path.
    """
    walk = _Walk(path, trust)
    try:
        walk.run()
    finally:
        walk.close()


def read_trusted(path: str, trust: Trust = ROOT_ONLY) -> str:
    """Return the UTF-8 text of a trusted regular file.

    The file is opened relative to its already-checked directory with
    ``O_NOFOLLOW``, and the opened descriptor itself is ``fstat``-ed and
    checked, so what is read is exactly what was judged.
    """
    walk = _Walk(path, trust)
    try:
        walk.run()
        _, real, st = walk.chain[-1]
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError(f"{real} is a {_kind(st.st_mode)}, not a regular file", path=path)
        parent_fd = walk.chain[-2][0]
        name = real.rsplit("/", 1)[1]
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(name, flags, dir_fd=parent_fd)
        except OSError as exc:
            raise _os_error(path, real, exc) from None
        with os.fdopen(fd, "rb") as f:
            opened = os.fstat(f.fileno())
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise PolicyError(f"{real} changed while it was being checked", path=path)
            _check_stat(path, real, opened, trust)
            if not stat.S_ISREG(opened.st_mode):
                raise PolicyError(f"{real} is not a regular file", path=path)
            data = f.read(_MAX_POLICY_BYTES + 1)
    finally:
        walk.close()
    if len(data) > _MAX_POLICY_BYTES:
        raise PolicyError(f"larger than {_MAX_POLICY_BYTES} bytes", path=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not valid UTF-8 at byte {exc.start}", path=path) from None
