"""Declared file access, on the privileged side: globs to Landlock rules.

:class:`~privsepd.files.Files` adds ``CAP_DAC_OVERRIDE`` (or
``CAP_DAC_READ_SEARCH``) to a helper that is not root. That capability
alone would open every file on the host, so it comes with three fences,
set up here while the helper is still root, before it drops anything:

1. **Landlock** confines every file access of the helper (and of anything
   it execs) to the declared paths: read for ``read``, everything but
   execute for ``write``. Globs are expanded now; paths created later are
   not covered. Each path is opened ``O_PATH`` once, and that descriptor
   is what the rule is attached to.
2. **Trusted chains**: a declared path (or a glob match) is granted only if
   every directory above it, and every symlink followed on the way, is
   owned by root and not writable by group or others. Otherwise the
   service could, before its helper starts, swap ``/var/lib/svc/conf`` for
   a symlink to ``/etc`` and have Landlock grant the wrong tree. A declared
   tree also needs ``fs.protected_hardlinks = 1``, or a user able to write
   inside it could hard-link ``/etc/shadow`` into it.
3. **Side doors**: some uses of the DAC capability are not file opens and
   Landlock does not see them: connecting to a root-only Unix socket,
   writing extended attributes, setting timestamps to now, inotify and
   fanotify marks, POSIX message queues, opening by file handle, and
   io_uring and bpf (which reach the same objects without those system
   calls). A seccomp filter answers them with EPERM.

Without Landlock (or with an ABI too old to handle truncate, for write
access) the helper refuses to start, unless the declaration says
``without_landlock = "allow"``.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass, field

from privsepd.errors import PolicyError, ScopingError, UnsafePolicyError
from privsepd.files import Files, has_glob, matches_component
from privsepd.helper import kernel
from privsepd.policy.trust import check_trusted

__all__ = ["MAX_GRANTS", "SIDE_DOOR_SYSCALLS", "FileGrants", "expand", "open_grants"]

#: A declaration that expands to more paths than this is refused: declare
#: the directory instead (one rule, and no surprise at the next start).
MAX_GRANTS = 4096
_MAXSYMLINKS = 40

#: System calls through which a DAC capability reaches objects that
#: Landlock (ABI <= 7) does not mediate; denied with EPERM in helpers that
#: hold one because of ``files``.
SIDE_DOOR_SYSCALLS = (
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "inotify_add_watch",
    "fanotify_mark",
    "mq_open",
    "mq_unlink",
    "open_by_handle_at",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
)
#: socket()/socketpair() families denied for the same reason: a pathname
#: Unix socket connect (or datagram send) is a DAC write check Landlock
#: does not see, so CAP_DAC_OVERRIDE would reach root-only 0600 sockets.
SIDE_DOOR_SOCKET_FAMILIES = (socket.AF_UNIX,)

_READ_RIGHTS = kernel.LL_READ_FILE | kernel.LL_READ_DIR


# ---------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------


def expand(pattern: str) -> list[str]:
    """Paths that exist now and match *pattern* (sorted; no symlink resolved).

    The literal part before the first glob must be an existing directory,
    so a typo fails loudly instead of silently matching nothing; a glob may
    match nothing. A pattern without glob is returned as is (its existence
    is checked when it is opened).
    """
    parts = pattern.split("/")[1:]
    first = next((i for i, p in enumerate(parts) if has_glob(p)), None)
    if first is None:
        return [pattern]
    prefix = "/" + "/".join(parts[:first])
    if not os.path.isdir(prefix):
        raise ScopingError(f"files: {pattern!r}: {prefix} is not an existing directory")
    found = [prefix]
    for component in parts[first:]:
        nxt: list[str] = []
        for base in found:
            if has_glob(component):
                try:
                    names = sorted(os.listdir(base))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                except OSError as e:
                    raise ScopingError(f"files: {pattern!r}: cannot list {base}: {e.strerror}")
                nxt += [_join(base, n) for n in names if matches_component(n, component)]
            elif os.path.lexists(_join(base, component)):
                nxt.append(_join(base, component))
            if len(nxt) > MAX_GRANTS:
                raise ScopingError(
                    f"files: {pattern!r} matches more than {MAX_GRANTS} paths; "
                    "declare the directory instead"
                )
        found = nxt
    return found


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


# ---------------------------------------------------------------------------
# Opening, with the chain checked
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One Landlock rule: the declared pattern, and what it resolved to."""

    pattern: str
    path: str  # as matched
    real: str  # the object the rule attaches to
    write: bool
    directory: bool


class _Vanished(ScopingError):
    """A path that was there when the glob was expanded is gone now."""


def _untrusted(kind: str, path: str, pattern: str, exc: UnsafePolicyError) -> ScopingError:
    where = getattr(exc, "offending", path)
    owner = getattr(exc, "owner", None)
    mode = getattr(exc, "mode", None)
    detail = f" (owner uid {owner}, mode {mode:04o})" if owner is not None and mode else ""
    return ScopingError(
        f"files: refusing to grant {kind} access to {path!r} (declared as {pattern!r}): "
        f"{where}{detail} can be changed by a user other than root, who could then swap "
        "what the path names; every directory above a declared path, and every symlink "
        "on the way, must be owned by root and not writable by group or others"
    )


def _open_checked(path: str, pattern: str, kind: str, depth: int = 0) -> int:
    """O_PATH fd of what *path* names, after checking nobody but root can swap it."""
    if depth > _MAXSYMLINKS:
        raise ScopingError(f"files: {path!r} (declared as {pattern!r}): too many symlinks")
    parent, _, name = path.rpartition("/")
    if name in ("", ".", ".."):
        parent, name = path, ""
    try:
        check_trusted(parent or "/")
    except UnsafePolicyError as exc:
        raise _untrusted(kind, path, pattern, exc) from None
    except PolicyError as exc:
        gone = not os.path.lexists(parent or "/")
        raise (_Vanished if gone else ScopingError)(
            f"files: {pattern!r}: {path}: {exc.reason}"
        ) from None
    if not name:
        return os.open(path, kernel.O_PATH | os.O_CLOEXEC)
    try:
        fd = os.open(path, kernel.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Vanished(f"files: declared {kind} path {path!r} does not exist") from None
    except OSError as exc:
        raise ScopingError(f"files: cannot open {path!r}: {exc.strerror}") from None
    if not stat.S_ISLNK(os.fstat(fd).st_mode):
        return fd
    # A symlink in a trusted directory: only root made it. Follow it and
    # check its target's chain the same way.
    try:
        target = os.readlink("", dir_fd=fd)
    finally:
        os.close(fd)
    if not target.startswith("/"):
        target = os.path.realpath(parent or "/") + "/" + target
    return _open_checked(target, pattern, kind, depth + 1)


@dataclass
class FileGrants:
    """The opened rules of one helper, and whether Landlock will enforce them."""

    files: Files
    confine: bool
    rules: list[tuple[int, Grant]] = field(default_factory=list)

    def close(self) -> None:
        while self.rules:
            os.close(self.rules.pop()[0])

    def restrict(self) -> int:
        """Apply the Landlock ruleset to the calling thread (after no_new_privs)."""
        handled = kernel.landlock_fs_rights(kernel.landlock_abi())
        write_rights = handled & ~kernel.LL_EXECUTE
        return kernel.landlock_restrict_rules(
            (fd, write_rights if g.write else _READ_RIGHTS, g.real) for fd, g in self.rules
        )

    def prove_confined(self) -> None:
        """Read Landlock back: listing ``/`` must now fail, unless ``/`` was granted.

        /proc shows no Landlock domain, so the helper asks the kernel the
        only way it can: by attempting an access the ruleset must deny.
        """
        if any(g.real == "/" for _, g in self.rules):
            return
        try:
            fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            return
        os.close(fd)
        raise ScopingError("files: Landlock did not take effect ('/' is still readable)")

    def install_side_door_filter(self) -> None:
        kernel.seccomp_install_deny(SIDE_DOOR_SYSCALLS, socket_families=SIDE_DOOR_SOCKET_FAMILIES)


def landlock_available(files: Files, abi: int) -> bool:
    """Whether Landlock can confine *files* on a kernel with *abi*.

    Raises ScopingError saying what to do when it cannot and the
    declaration does not accept the wider grant.
    """
    if abi >= files.landlock_abi_needed:
        return True
    if files.without_landlock == "allow":
        # Accepted: confine what this kernel can (an ABI 1-2 Landlock still
        # confines opens, only truncate(2) escapes it), or nothing at all.
        return abi >= 1
    cap = ", ".join(sorted(files.capabilities))
    have = "has no Landlock (or it is disabled)" if abi < 1 else f"has Landlock ABI {abi}"
    raise ScopingError(
        f"files: this kernel {have}; confining {cap} to the declared paths needs ABI "
        f">= {files.landlock_abi_needed}. Without it the helper could "
        f"{'write' if files.write else 'read'} every file on the host, so it refuses to "
        'start. Accept that explicitly with without_landlock = "allow" in the context\'s '
        'files (Python: Files(..., without_landlock="allow")), or run a kernel with '
        "Landlock enabled (CONFIG_SECURITY_LANDLOCK, 'landlock' in the lsm= list)"
    )


def _require_protected_hardlinks(tree: str) -> None:
    try:
        with open("/proc/sys/fs/protected_hardlinks") as f:
            value = f.read().strip()
    except OSError as exc:
        value = f"unreadable ({exc.strerror})"
    if value != "1":
        raise ScopingError(
            f"files: declared tree {tree!r} needs fs.protected_hardlinks = 1 (it is "
            f"{value}): otherwise a user who can write inside the tree could hard-link "
            "any file of the host into it"
        )


def open_grants(files: Files) -> FileGrants:
    """Check and open every declared path; run as root, before scoping.

    Landlock availability is decided first, so a helper that must refuse
    does so before touching the filesystem.
    """
    grants = FileGrants(files, landlock_available(files, kernel.landlock_abi()))
    if not grants.confine:
        return grants
    try:
        for kind, patterns in (("write", files.write), ("read", files.read)):
            for pattern in patterns:
                glob = any(has_glob(part) for part in pattern.split("/"))
                for path in expand(pattern):
                    try:
                        fd = _open_checked(path, pattern, kind)
                    except _Vanished:
                        if not glob:
                            raise
                        continue  # matched, then removed (an interface going away)
                    try:
                        real = os.readlink(f"/proc/self/fd/{fd}")
                        directory = stat.S_ISDIR(os.fstat(fd).st_mode)
                    except BaseException:
                        os.close(fd)
                        raise
                    grant = Grant(pattern, path, real, kind == "write", directory)
                    grants.rules.append((fd, grant))
                    if len(grants.rules) > MAX_GRANTS:
                        raise ScopingError(
                            f"files: the declaration expands to more than {MAX_GRANTS} paths"
                        )
                    if directory:
                        _require_protected_hardlinks(path)
    except BaseException:
        grants.close()
        raise
    return grants
