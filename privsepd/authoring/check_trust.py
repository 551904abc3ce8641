"""Paths, exec dirs and ownership: who besides root could replace what a rule runs.

Files are read without the runtime trust check (an operator lints a
checkout too); ownership is reported as the ``unsafe-ownership`` finding
instead, and only when the check run asks for it (``--no-ownership`` skips
it). The same trust check judges exec_dirs entries and the executables
rules resolve to.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from privsepd.authoring.check_base import DEFAULT_EXEC_DIRS, CheckState, under_world_writable
from privsepd.errors import PolicyError

if TYPE_CHECKING:
    from privsepd.policy.filters import Filter

__all__ = ["check_exec_dir", "check_executable", "check_owned", "user_writable_base"]


def check_owned(checker: CheckState, path: str) -> None:
    """``unsafe-ownership`` for a policy file or directory (once per path)."""
    if not checker.ownership or path in checker.owned_checked:
        return
    checker.owned_checked.add(path)
    from privsepd.policy.trust import check_trusted

    try:
        check_trusted(path)
    except PolicyError as exc:
        checker.add(
            path,
            None,
            "",
            "unsafe-ownership",
            "error",
            exc.reason,
            "whoever can write there can rewrite the policy, i.e. grant themselves root; "
            "privsepd refuses to load it",
            f"chown root:root and chmod go-w {getattr(exc, 'offending', path)}",
        )


def check_exec_dir(checker: CheckState, conf: str, directory: str) -> None:
    """A rootwrap.conf exec_dirs entry: world-writable, or replaceable by non-root."""
    if under_world_writable(directory):
        checker.add(
            conf,
            None,
            "",
            "world-writable-path",
            "error",
            f"exec_dirs entry {directory!r} is under a world-writable directory",
            "any local user can plant a program there that relative rules run as root",
            "list only root-owned system directories in exec_dirs",
        )
        return
    if not checker.ownership or not os.path.isdir(directory):
        return
    from privsepd.policy.trust import check_trusted

    try:
        check_trusted(directory)
    except PolicyError as exc:
        checker.add(
            conf,
            None,
            "",
            "untrusted-executable",
            "error",
            f"exec_dirs entry: {exc.reason}",
            "its owner (or group) can plant a program that relative rules run as root",
            "list only root-owned, non-writable directories in exec_dirs",
        )


def check_executable(checker: CheckState, filt: Filter) -> None:
    """The program a rule runs: missing from exec_dirs, or replaceable by non-root."""
    if filt.kind == "ChainingFilter" or not filt.exec_path:
        return
    dirs = checker.exec_dirs if checker.exec_dirs is not None else DEFAULT_EXEC_DIRS
    if os.path.isabs(filt.exec_path):
        found = filt.exec_path if os.access(filt.exec_path, os.X_OK) else None
    else:
        found = next(
            (
                os.path.join(d, filt.exec_path)
                for d in dirs
                if os.access(os.path.join(d, filt.exec_path), os.X_OK)
            ),
            None,
        )
    if found is None:
        where = "" if os.path.isabs(filt.exec_path) else f" in {list(dirs)}"
        checker.on(
            filt,
            "missing-executable",
            "warning",
            f"executable {filt.exec_path!r} not found{where}",
            "",
            "install the program, fix the path, or drop the rule (it only yields "
            "'executable not found')",
        )
        return
    if not checker.ownership or under_world_writable(found):
        return
    from privsepd.policy.trust import check_trusted

    try:
        check_trusted(found)
    except PolicyError as exc:
        checker.on(
            filt,
            "untrusted-executable",
            "error",
            f"executable {found}: {exc.reason}",
            f"its owner or group can replace the program this rule runs as {filt.run_as}",
            "install it root-owned and not writable by group or others",
        )


_SCAN_LIMIT = 2000  # directories looked at below a base; a huge tree is sampled, not walked


def _writer(st: os.stat_result) -> str | None:
    """Who besides root can write a directory with this stat, or None."""
    if st.st_mode & 0o002:
        return "everyone (world-writable)"
    if st.st_mode & 0o020:
        return f"group {st.st_gid}"
    if st.st_uid != 0:
        return f"uid {st.st_uid}"
    return None


def user_writable_base(checker: CheckState, filt: Filter, base: str, what: str) -> None:
    """Warn when a non-root user can write ``base`` or a directory below it.

    The runtime pins each path before the command runs (openat2 beneath the
    base, no symlinks: privsepd.paths), so swapped components cannot lead
    out; but such a user still chooses which of its files the command acts
    on, can make calls fail by racing, and a name that does not exist yet
    in its directory is refused (a symlink could be planted there).
    """
    import stat

    found = None
    seen = 0
    for top, dirs, _files in os.walk(base, followlinks=False):
        try:
            st = os.lstat(top)
        except OSError:
            continue
        who = _writer(st) if stat.S_ISDIR(st.st_mode) else None
        if who is not None:
            found = (top, who)
            break
        seen += 1
        if seen >= _SCAN_LIMIT:
            break
        dirs.sort()
    if found is None:
        return
    where, who = found
    inside = "" if where == base.rstrip("/") or where == base else f" (at {where})"
    checker.on(
        filt,
        "user-writable-path",
        "warning",
        f"{what} {base!r} can be written by {who}{inside}",
        "that user decides what the paths under it are: it can swap components while a "
        "command is decided (privsepd pins the path, so it only makes the call fail) and "
        "link or move its own files into place",
        "keep the base root-owned where possible; create new files from a function "
        "(PathUnder.open) instead of a command",
    )
