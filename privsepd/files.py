"""Declared file access: the files and trees a helper may read and write.

A helper leaves uid 0, so root-owned 0644 files (``/sys/class/net/*/mtu``,
``/etc/...``) are closed to it. :class:`Files` names exactly the paths it
needs; the helper then gets ``CAP_DAC_OVERRIDE`` (``CAP_DAC_READ_SEARCH``
when it only reads), confined by a Landlock ruleset to those paths, so the
capability reaches nothing else. The mechanism lives on the privileged side
(:mod:`privsepd.helper.grants`); this module is only the declaration, shared
by the library (``Context(files=...)``) and native TOML policy
(``files = {...}``), and does no I/O.

Patterns are absolute, normalised paths. A component may hold the glob
characters ``*``, ``?`` and ``[...]`` (matched within that one component, as
a shell does: ``*`` does not match a leading dot); ``**`` is not supported.
A directory means the whole tree beneath it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from privsepd.errors import ScopingError

__all__ = ["WITHOUT_LANDLOCK", "Files", "has_glob", "matches_component"]

#: Values of ``without_landlock``: what to do on a kernel without Landlock.
WITHOUT_LANDLOCK = ("refuse", "allow")

_GLOB_CHARS = frozenset("*?[")


def has_glob(component: str) -> bool:
    """True when one path component is a pattern rather than a literal name."""
    return any(c in _GLOB_CHARS for c in component)


def matches_component(name: str, pattern: str) -> bool:
    """Shell-style match of one directory entry against one pattern component.

    A leading dot must be matched literally, as in a shell, so ``*`` never
    picks up hidden entries by accident.
    """
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _check_pattern(field: str, pattern: object) -> str:
    if not isinstance(pattern, str):
        raise ScopingError(f"files {field}: paths must be strings, got {pattern!r}")
    problem = None
    if not pattern.startswith("/"):
        problem = "must be absolute"
    elif "\0" in pattern:
        problem = "contains a NUL byte"
    elif pattern != "/" and (pattern.endswith("/") or "//" in pattern):
        problem = "must be normalised (no empty component or trailing '/')"
    else:
        parts = pattern.split("/")[1:]
        if any(p in (".", "..") for p in parts):
            problem = "must be normalised (no '.' or '..' component)"
        elif any("**" in p for p in parts):
            problem = "'**' is not supported; '*' matches within one component"
    if problem is not None:
        raise ScopingError(f"files {field} path {pattern!r} {problem}")
    return pattern


def _paths(field: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise ScopingError(f"files {field} takes a list of paths, not one string")
    out: list[str] = []
    for pattern in value:
        pattern = _check_pattern(field, pattern)
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


@dataclass(frozen=True)
class Files:
    """Paths a helper may read and write despite file permissions.

    ``write`` implies read. ``without_landlock`` says what happens on a
    kernel without Landlock (or with a Landlock too old to confine writes,
    ABI < 3): ``"refuse"`` (the default) stops the helper from starting;
    ``"allow"`` starts it anyway: with no Landlock at all the DAC capability
    is unconfined, able to read (and, with ``write``, write) every file on
    the host; with an older Landlock only truncate(2) escapes. Globs are
    expanded when the helper starts: a path created later is not covered
    until the helper is restarted.
    """

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    without_landlock: str = "refuse"

    def __post_init__(self) -> None:
        write = _paths("write", self.write)
        read = tuple(p for p in _paths("read", self.read) if p not in write)
        object.__setattr__(self, "read", read)
        object.__setattr__(self, "write", write)
        if self.without_landlock not in WITHOUT_LANDLOCK:
            raise ScopingError(
                f"files without_landlock must be one of {', '.join(map(repr, WITHOUT_LANDLOCK))}, "
                f"got {self.without_landlock!r}"
            )

    @property
    def empty(self) -> bool:
        return not (self.read or self.write)

    @property
    def capabilities(self) -> frozenset[str]:
        """The DAC capability the declaration adds to the helper's own."""
        if self.write:
            return frozenset({"CAP_DAC_OVERRIDE"})
        if self.read:
            return frozenset({"CAP_DAC_READ_SEARCH"})
        return frozenset()

    @property
    def landlock_abi_needed(self) -> int:
        """Oldest Landlock ABI that confines the granted capability.

        Before ABI 3 Landlock does not handle truncate(2), which
        CAP_DAC_OVERRIDE would then allow on every file of the host.
        """
        return 3 if self.write else 1 if self.read else 0
