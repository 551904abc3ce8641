"""The native TOML policy format: contexts, functions and commands.

One file may declare any of the three. Parsing is strict on purpose: every
table accepts a fixed set of keys and anything else (a typo such as
``must_exits`` or ``capabilites``) is a load error, because a misspelt key
silently ignored would silently drop a restriction. Every error names the
file and, where it can be found, the line of the offending key.

The schema is documented in ``docs/policy.md``; :func:`parse_policy` turns
one file's text into a :class:`PolicyFragment`, and
:mod:`privsepd.policy.loader` merges fragments from several files.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from privsepd.constraints import (
    Bool,
    Bytes,
    Choice,
    Constraint,
    DecimalInt,
    IntRange,
    OneOf,
    PathUnder,
    Str,
    constraint_from_spec,
)
from privsepd.errors import PolicyError, ScopingError
from privsepd.files import WITHOUT_LANDLOCK, Files
from privsepd.kernel_names import CAPABILITIES, SYSCALLS
from privsepd.policy.filters import RUN_AS_HELPER, Filter, Miss, Source

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (an environment marker installs it)
    import tomli as tomllib

__all__ = [
    "CHAIN",
    "RUN_AS_HELPER",
    "ContextSpec",
    "FunctionSpec",
    "NativeCommand",
    "PolicyFragment",
    "SandboxSpec",
    "argv_constraint",
    "default_account",
    "parse_policy",
]


@dataclass(frozen=True)
class SandboxSpec:
    """Optional extra confinement of a context's helper."""

    landlock_read: tuple[str, ...] = ()
    landlock_write: tuple[str, ...] = ()
    seccomp_deny: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.landlock_read or self.landlock_write or self.seccomp_deny)


@dataclass(frozen=True)
class ContextSpec:
    """What a context's helper holds: capabilities, identity, limits, peers.

    ``user`` None means the default chosen at helper start (the ``privsepd``
    account if present, else ``nobody``); uid 0 needs ``stay_root``.
    """

    name: str
    capabilities: frozenset[str] = frozenset()
    user: str | None = None
    group: str | None = None
    stay_root: bool = False
    umask: int = 0o077
    timeout: float = 30.0
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    allow_users: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()
    audit: str | None = None
    sandbox: SandboxSpec = SandboxSpec()
    files: Files | None = None
    source: Source | None = field(default=None, compare=False)
    max_frame: int | None = None  # bytes per frame, both ways (default 4 MiB)


@dataclass(frozen=True)
class FunctionSpec:
    """A privileged function a context's helper may run, and its arg checks.

    With ``strict`` (the default) every parameter of the function must have
    a constraint; the helper enforces that against the real signature.
    """

    name: str
    context: str
    constraints: Mapping[str, Constraint] = field(default_factory=dict)
    timeout: float | None = None
    strict: bool = True
    source: Source | None = field(default=None, compare=False)


class _Chain:
    """Marker for a command pattern ending in ``{chain = true}``."""

    def __repr__(self) -> str:
        return "CHAIN"


CHAIN: Any = _Chain()


class NativeCommand(Filter):
    """One ``[[command]]`` rule, usable wherever a rootwrap filter is.

    It offers the :class:`~privsepd.policy.filters.Filter` interface
    (``check``/``resolve``/``command``/``environment``/``chained``/
    ``index_keys``), so the shared FilterIndex matches it in policy order
    together with INI filters. ``patterns`` holds, per position after
    argv[0], a literal str or a Constraint; ``rest`` is None (no further
    arguments), a Constraint each further argument must pass, or CHAIN (the
    further arguments must be a command that another, non-chaining rule with
    the same run_as allows). ``capabilities`` are the ambient capabilities
    the command gets; the executor reads them from ``decision.filter`` (and
    ``decision.chain.filter``). Arguments constrained by ``path_under``
    (positional or ``rest``) are shown resolved in ``decision.command`` and
    are pinned by the executor (:func:`privsepd.paths.pin_command`): the
    program gets ``/proc/self/fd/N`` for the object judged, so swapping a
    path component afterwards changes nothing.

    ``run_as`` omitted (:data:`RUN_AS_HELPER`) means the user of whoever
    runs the command: a context's helper runs it as its own uid, gid and
    groups; the rootwrap shim (no context) as the unprivileged default
    account (``privsepd``, else ``nobody``). Root only when a rule says so.
    """

    kind = "NativeCommand"

    def __init__(
        self,
        name: str,
        exec_path: str,
        patterns: Sequence[str | Constraint] = (),
        rest: Constraint | _Chain | None = None,
        *,
        context: str | None = None,
        run_as: str | None = None,
        capabilities: frozenset[str] = frozenset(),
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        source: Source | None = None,
    ) -> None:
        run_as = RUN_AS_HELPER if run_as is None else run_as
        super().__init__(exec_path, run_as, source=source or Source("<native>", 0, name))
        self.patterns: tuple[str | Constraint, ...] = tuple(patterns)
        self.rest = rest
        self.chaining = rest is CHAIN
        self.context = context
        self.capabilities = frozenset(capabilities)
        self.env: Mapping[str, str] = MappingProxyType(dict(env or {}))
        self.timeout = timeout

    def __repr__(self) -> str:
        where = f"{self.source.path}:{self.source.line}"
        return f"<{self.kind} {self.name}: {self.describe()} @ {where}>"

    def index_keys(self) -> tuple[str, ...] | None:
        return tuple(dict.fromkeys((self.exec_path, os.path.basename(self.exec_path))))

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        """None when argv fits; native rules have no oslo mode, so strict is moot."""
        if not argv:
            return Miss("command", "empty command")
        if not self._command_matches(argv[0]):
            return Miss("command", f"{argv[0]!r} is not {self.exec_path!r}")
        for i, arg in enumerate(argv):
            if type(arg) is not str or "\0" in arg:
                return Miss("argument", f"argument {i} is not a NUL-free string")
        given = argv[1:]
        fixed = len(self.patterns)
        too_few = len(given) < fixed + (1 if self.chaining else 0)
        if too_few or (self.rest is None and len(given) != fixed):
            return Miss("arity", f"{len(given)} arguments, rule needs {self._arity()}")
        for i, (pattern, arg) in enumerate(zip(self.patterns, given), 1):
            if isinstance(pattern, str):
                if pattern != arg:
                    return Miss("argument", f"argument {i} {arg!r} is not {pattern!r}")
                continue
            problem = pattern._problem(arg)
            if problem is not None:
                return Miss("argument", f"argument {i} fails {pattern.describe()}: {problem}")
        if isinstance(self.rest, Constraint):
            for i, arg in enumerate(given[fixed:], fixed + 1):
                problem = self.rest._problem(arg)
                if problem is not None:
                    return Miss("argument", f"argument {i} fails {self.rest.describe()}: {problem}")
        return None

    def _arity(self) -> str:
        n = len(self.patterns)
        if self.rest is None:
            return f"exactly {n}"
        return f"at least {n + 1 if self.chaining else n}"

    def user(self) -> tuple[int, int] | None:
        """(uid, gid) the command runs as; see the class doc for the default."""
        if self.run_as != RUN_AS_HELPER:
            return super().user()
        if self.context is not None:
            return os.geteuid(), os.getegid()  # the helper deciding is the one running it
        pw = default_account()
        return None if pw is None else (pw.pw_uid, pw.pw_gid)

    def _pattern_at(self, i: int) -> Any:
        """The pattern (str or Constraint) governing argv[i] (i >= 1), or None."""
        if i - 1 < len(self.patterns):
            return self.patterns[i - 1]
        return self.rest if isinstance(self.rest, Constraint) else None

    def path_arguments(self, argv: Sequence[str]) -> dict[int, tuple[str, bool]]:
        """argv positions judged by a path_under constraint: (base, must_exist)."""
        out = {}
        last = len(argv) if not self.chaining else 1 + len(self.patterns)
        for i in range(1, last):
            found = _path_constraint(self._pattern_at(i), argv[i])
            if found is not None:
                out[i] = (found.prefix, found.must_exist)
        return out

    def command(self, argv: Sequence[str], executable: str) -> list[str]:
        out = [executable]
        spots = self.path_arguments(argv)
        for i, arg in enumerate(argv[1:], 1):
            found = _path_constraint(self._pattern_at(i), arg) if i in spots else None
            if found is not None:
                # Shown resolved; the executor pins (and re-judges) it before running.
                problem, real = found._resolve(arg)
                arg = real if problem is None and real is not None else arg
            out.append(arg)
        return out

    def environment(self, argv: Sequence[str]) -> dict[str, str]:
        return dict(self.env)

    def chained(self, argv: Sequence[str]) -> list[str]:
        if not self.chaining:
            return []
        return list(argv[1 + len(self.patterns) :])

    def describe(self) -> str:
        """The pattern on one line, for explain tools and messages."""
        parts = [self.exec_path]
        parts += [p if isinstance(p, str) else f"<{p.describe()}>" for p in self.patterns]
        if self.chaining:
            parts.append("<allowed command>...")
        elif isinstance(self.rest, Constraint):
            parts.append(f"<{self.rest.describe()}>...")
        return " ".join(parts)


def default_account() -> Any:
    """The passwd entry unprivileged helpers default to: ``privsepd``, else ``nobody``."""
    import pwd

    for name in ("privsepd", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _path_constraint(c: Any, value: str) -> PathUnder | None:
    """The PathUnder that admits ``value`` under ``c`` (directly or as a one_of member)."""
    if isinstance(c, PathUnder):
        return c
    if isinstance(c, OneOf):
        for member in c.constraints:
            if member.matches(value):
                return _path_constraint(member, value)
    return None


@dataclass
class PolicyFragment:
    """Everything one policy file declares, before merging."""

    path: str
    contexts: dict[str, ContextSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    commands: dict[str, NativeCommand] = field(default_factory=dict)


def argv_constraint(c: Constraint) -> Constraint:
    """Adapt a constraint to argv, where every argument is a str.

    An int range becomes a canonical-decimal check; choices must be strings;
    bool and bytes cannot describe an argv element at all.
    """
    if isinstance(c, IntRange):
        return DecimalInt(c)
    if isinstance(c, Choice):
        bad = [v for v in c.values if type(v) is not str]
        if bad:
            raise PolicyError(f"command choice values must be strings, got {bad!r}")
        return c
    if isinstance(c, (Bool, Bytes)):
        raise PolicyError(f"{c.describe()} cannot constrain a command argument")
    if isinstance(c, OneOf):
        return OneOf(*(argv_constraint(m) for m in c.constraints))
    return c


# --- locating lines ------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_KEYLINE = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_key(text: str) -> tuple[str, ...]:
    parts = []
    for m in re.finditer(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", text):
        parts.append(next(g for g in m.groups() if g is not None))
    return tuple(parts)


class _Locator:
    """Best-effort line numbers for keys of an already-valid TOML document."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        # (first line number, header keys or None for top level, is_array)
        self.headers: list[tuple[int, tuple[str, ...] | None, bool]] = [(0, None, False)]
        for no, line in enumerate(self.lines, 1):
            m = _HEADER.match(line)
            if m:
                self.headers.append((no, _split_key(m.group(2)), m.group(1) == "[["))

    def _body(self, index: int) -> range:
        start = self.headers[index][0] + 1
        end = self.headers[index + 1][0] if index + 1 < len(self.headers) else len(self.lines) + 1
        return range(start, end)

    def _key_in(self, index: int, rest: tuple[str, ...]) -> int | None:
        for no in self._body(index):
            m = _KEYLINE.match(self.lines[no - 1])
            if m:
                keys = _split_key(m.group(1))
                n = min(len(keys), len(rest))
                if keys[:n] == rest[:n]:
                    return no
        return None

    def find(self, where: tuple) -> int | None:
        if len(where) >= 2 and isinstance(where[1], int):
            arrays = [i for i, h in enumerate(self.headers) if h[2] and h[1] == (where[0],)]
            if where[1] >= len(arrays):
                return None
            index = arrays[where[1]]
            rest = tuple(str(w) for w in where[2:])
            line = self._key_in(index, rest) if rest else None
            return line or self.headers[index][0]
        keys = tuple(str(w) for w in where)
        for k in range(len(keys), 0, -1):
            for index, h in enumerate(self.headers):
                if h[1] == keys[:k] and not h[2]:
                    rest = keys[k:]
                    line = self._key_in(index, rest) if rest else None
                    return line or h[0]
        return self._key_in(0, keys)


# --- reading -------------------------------------------------------------------

_CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENTRYPOINT = re.compile(
    r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", re.ASCII
)
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENT = re.compile(r"[A-Za-z_]\w*", re.ASCII)

# Bounds of a context's max_frame: room for any error message, and below
# what one decoded frame may reasonably cost the helper.
MIN_FRAME = 64 * 1024
MAX_FRAME = 256 * 1024 * 1024

_TOP_KEYS = frozenset({"context", "function", "command"})
_CONTEXT_KEYS = frozenset(
    {
        "capabilities",
        "user",
        "group",
        "stay_root",
        "umask",
        "timeout",
        "allow_uids",
        "allow_gids",
        "allow_users",
        "allow_groups",
        "audit",
        "sandbox",
        "files",
        "max_frame",
    }
)
_FILES_KEYS = frozenset({"read", "write", "without_landlock"})
_SANDBOX_KEYS = frozenset({"landlock_read", "landlock_write", "seccomp_deny"})
_FUNCTION_KEYS = frozenset({"name", "context", "timeout", "strict", "args"})
_COMMAND_KEYS = frozenset(
    {"name", "context", "exec", "args", "run_as", "capabilities", "env", "timeout"}
)


class _Reader:
    def __init__(self, path: str, text: str):
        self.path = path
        self.locator = _Locator(text)

    def error(self, message: str, where: tuple) -> PolicyError:
        return PolicyError(message, path=self.path, line=self.locator.find(where))

    def source(self, where: tuple, name: str) -> Source:
        return Source(self.path, self.locator.find(where) or 0, name)

    def label(self, where: tuple) -> str:
        if len(where) >= 2 and isinstance(where[1], int):
            head = f"[[{where[0]}]] #{where[1] + 1}"
            rest = where[2:]
        else:
            head, rest = f"[{'.'.join(str(w) for w in where[:2])}]", where[2:]
        return head + (" " + ".".join(str(r) for r in rest) if rest else "")

    def table(self, value: Any, where: tuple, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"{self.label(where)} must be a table", where)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.error(
                f"unknown key {unknown[0]!r} in {self.label(where)} "
                f"(allowed: {', '.join(sorted(allowed))})",
                (*where, unknown[0]),
            )
        return value

    def typed(self, table: dict, key: str, types: Any, what: str, where: tuple) -> Any:
        value = table[key]
        ok = type(value) in types if isinstance(types, tuple) else type(value) is types
        if not ok:
            raise self.error(
                f"{self.label((*where, key))} must be {what}, got {value!r}", (*where, key)
            )
        return value

    def str_list(self, table: dict, key: str, where: tuple, pattern: re.Pattern | None = None):
        items = self.typed(table, key, list, "a list of strings", where)
        for item in items:
            if type(item) is not str or (pattern is not None and not pattern.fullmatch(item)):
                raise self.error(
                    f"{self.label((*where, key))}: invalid entry {item!r}", (*where, key)
                )
        if len(set(items)) != len(items):
            raise self.error(f"{self.label((*where, key))} has duplicate entries", (*where, key))
        return tuple(items)

    def timeout(self, table: dict, key: str, where: tuple) -> float:
        value = self.typed(table, key, (int, float), "a number of seconds", where)
        if not (math.isfinite(value) and value > 0):
            raise self.error(
                f"{self.label((*where, key))} must be positive, got {value}", (*where, key)
            )
        return float(value)

    def capabilities(self, table: dict, key: str, where: tuple) -> frozenset[str]:
        names = self.str_list(table, key, where)
        out = set()
        for raw in names:
            name = raw.upper()
            if not name.startswith("CAP_"):
                name = "CAP_" + name
            if name not in CAPABILITIES:
                raise self.error(
                    f"{self.label((*where, key))}: unknown capability {raw!r}", (*where, key)
                )
            out.add(name)
        return frozenset(out)

    def constraint(self, spec: Any, where: tuple, argv: bool = False) -> Constraint:
        try:
            c = constraint_from_spec(spec)
            return argv_constraint(c) if argv else c
        except PolicyError as exc:
            raise self.error(f"{self.label(where)}: {exc.reason}", where) from None

    # -- sections ---------------------------------------------------------------

    def read(self, doc: dict[str, Any]) -> PolicyFragment:
        frag = PolicyFragment(self.path)
        unknown = sorted(set(doc) - _TOP_KEYS)
        if unknown:
            raise self.error(
                f"unknown top-level key {unknown[0]!r} (allowed: command, context, function)",
                (unknown[0],),
            )
        contexts = doc.get("context", {})
        if not isinstance(contexts, dict):
            raise self.error("'context' must be a table of [context.NAME] tables", ("context",))
        for name, body in contexts.items():
            frag.contexts[name] = self.read_context(name, body)
        for kind, reader, out in (
            ("function", self.read_function, frag.functions),
            ("command", self.read_command, frag.commands),
        ):
            items = doc.get(kind, [])
            if not isinstance(items, list):
                raise self.error(f"'{kind}' must be an array of [[{kind}]] tables", (kind,))
            for index, body in enumerate(items):
                spec = reader(index, body)
                if spec.name in out:
                    first = out[spec.name].source
                    raise self.error(
                        f"{kind} {spec.name!r} is defined twice (first at {first})", (kind, index)
                    )
                out[spec.name] = spec
        return frag

    def read_context(self, name: str, body: Any) -> ContextSpec:
        where: tuple = ("context", name)
        if not _CONTEXT_NAME.fullmatch(name):
            raise self.error(f"invalid context name {name!r}", where)
        t = self.table(body, where, _CONTEXT_KEYS)
        kw: dict[str, Any] = {"name": name, "source": self.source(where, name)}
        if "capabilities" in t:
            kw["capabilities"] = self.capabilities(t, "capabilities", where)
        for key in ("user", "group"):
            if key in t:
                value = self.typed(t, key, str, "a user/group name", where)
                if not _ACCOUNT.fullmatch(value):
                    raise self.error(f"invalid {key} name {value!r}", (*where, key))
                kw[key] = value
        if "stay_root" in t:
            kw["stay_root"] = self.typed(t, "stay_root", bool, "true or false", where)
        if kw.get("stay_root") and ("user" in kw or "group" in kw):
            raise self.error("stay_root = true cannot be combined with user/group", where)
        if kw.get("user") == "root" and not kw.get("stay_root"):
            raise self.error(
                "user 'root' is only allowed as the explicit stay_root = true",
                (*where, "user"),
            )
        if "umask" in t:
            kw["umask"] = self.umask(t, where)
        if "timeout" in t:
            kw["timeout"] = self.timeout(t, "timeout", where)
        for key in ("allow_uids", "allow_gids"):
            if key in t:
                ids = self.typed(t, key, list, "a list of numeric ids", where)
                if any(type(i) is not int or not 0 <= i < 2**32 - 1 for i in ids):
                    raise self.error(
                        f"{key} entries must be numeric ids, got {ids!r}", (*where, key)
                    )
                kw[key] = frozenset(ids)
        for key in ("allow_users", "allow_groups"):
            if key in t:
                kw[key] = self.str_list(t, key, where, _ACCOUNT)
        if "audit" in t:
            audit = self.typed(t, "audit", str, 'a target ("syslog", "none" or a path)', where)
            if audit == "logger":
                raise self.error(
                    'audit = "logger" sent records only to the client, which may suppress '
                    'them; write "none" to run without a root-owned trail, or leave audit unset',
                    (*where, "audit"),
                )
            if (
                audit not in ("syslog", "none")
                and not audit.startswith("/")
                and not audit.startswith("syslog:/")
            ):
                raise self.error(
                    'audit must be "syslog", "syslog:/SOCKET", "none" or an absolute path, '
                    f"got {audit!r}",
                    (*where, "audit"),
                )
            kw["audit"] = audit
        if "sandbox" in t:
            kw["sandbox"] = self.read_sandbox(t["sandbox"], (*where, "sandbox"))
        if "files" in t:
            kw["files"] = self.read_files(t["files"], (*where, "files"))
        if "max_frame" in t:
            size = self.typed(t, "max_frame", int, "a number of bytes", where)
            if not MIN_FRAME <= size <= MAX_FRAME:
                raise self.error(
                    f"max_frame must be between {MIN_FRAME} and {MAX_FRAME} bytes, got {size}",
                    (*where, "max_frame"),
                )
            kw["max_frame"] = size
        return ContextSpec(**kw)

    def read_files(self, body: Any, where: tuple) -> Files | None:
        """``files = { read = [...], write = [...], without_landlock = "refuse" }``."""
        t = self.table(body, where, _FILES_KEYS)
        kw: dict[str, Any] = {}
        for key in ("read", "write"):
            if key in t:
                kw[key] = self.str_list(t, key, where)
        if "without_landlock" in t:
            choices = " or ".join(f'"{c}"' for c in WITHOUT_LANDLOCK)
            kw["without_landlock"] = self.typed(t, "without_landlock", str, choices, where)
        try:
            files = Files(**kw)
        except ScopingError as exc:
            bad = "without_landlock" if "without_landlock" in str(exc) else None
            key = bad or next((k for k in ("write", "read") if f"files {k}" in str(exc)), None)
            raise self.error(str(exc), (*where, key) if key else where) from None
        return None if files.empty else files

    def umask(self, t: dict, where: tuple) -> int:
        value = t["umask"]
        if type(value) is str and re.fullmatch(r"0?[0-7]{3}", value):
            return int(value, 8)
        if type(value) is int and 0 <= value <= 0o777:
            return value
        raise self.error(
            f'umask must be an octal string like "0077" or 0o077, got {value!r}',
            (*where, "umask"),
        )

    def read_sandbox(self, body: Any, where: tuple) -> SandboxSpec:
        t = self.table(body, where, _SANDBOX_KEYS)
        kw: dict[str, Any] = {}
        for key in ("landlock_read", "landlock_write"):
            if key in t:
                paths = self.str_list(t, key, where)
                for p in paths:
                    if not p.startswith("/") or "\0" in p:
                        raise self.error(f"{key} paths must be absolute, got {p!r}", (*where, key))
                kw[key] = paths
        if "seccomp_deny" in t:
            names = self.str_list(t, "seccomp_deny", where)
            unknown = [n for n in names if n not in SYSCALLS]
            if unknown:
                raise self.error(
                    f"seccomp_deny: unknown syscall {unknown[0]!r}", (*where, "seccomp_deny")
                )
            kw["seccomp_deny"] = names
        return SandboxSpec(**kw)

    def read_function(self, index: int, body: Any) -> FunctionSpec:
        where: tuple = ("function", index)
        t = self.table(body, where, _FUNCTION_KEYS)
        for key in ("name", "context"):
            if key not in t:
                raise self.error(f"{self.label(where)} needs {key!r}", where)
        name = self.typed(t, "name", str, "'module:qualname'", where)
        if not _ENTRYPOINT.fullmatch(name):
            raise self.error(
                f"function name must be 'module:qualname', got {name!r}", (*where, "name")
            )
        context = self.typed(t, "context", str, "a context name", where)
        kw: dict[str, Any] = {"name": name, "context": context, "source": self.source(where, name)}
        if "timeout" in t:
            kw["timeout"] = self.timeout(t, "timeout", where)
        if "strict" in t:
            kw["strict"] = self.typed(t, "strict", bool, "true or false", where)
        constraints = {}
        args = t.get("args", {})
        if not isinstance(args, dict):
            raise self.error("function args must be a table arg = {constraint}", (*where, "args"))
        for arg, spec in args.items():
            if not _IDENT.fullmatch(arg):
                raise self.error(f"invalid argument name {arg!r}", (*where, "args", arg))
            constraints[arg] = self.constraint(spec, (*where, "args", arg))
        kw["constraints"] = MappingProxyType(constraints)
        return FunctionSpec(**kw)

    def read_command(self, index: int, body: Any) -> NativeCommand:
        where: tuple = ("command", index)
        t = self.table(body, where, _COMMAND_KEYS)
        for key in ("name", "exec"):
            if key not in t:
                raise self.error(f"{self.label(where)} needs {key!r}", where)
        name = self.typed(t, "name", str, "a rule name", where)
        if not _RULE_NAME.fullmatch(name):
            raise self.error(f"invalid command name {name!r}", (*where, "name"))
        exec_path = self.typed(t, "exec", str, "an absolute path", where)
        if not exec_path.startswith("/") or os.path.normpath(exec_path) != exec_path:
            raise self.error(
                f"exec must be a normalised absolute path, got {exec_path!r}", (*where, "exec")
            )
        kw: dict[str, Any] = {
            "name": name,
            "exec_path": exec_path,
            "source": self.source(where, name),
        }
        if "context" in t:
            kw["context"] = self.typed(t, "context", str, "a context name", where)
        if "args" in t:
            kw["patterns"], kw["rest"] = self.read_argv(t["args"], (*where, "args"))
        if "run_as" in t:
            run_as = self.typed(t, "run_as", str, "a user name", where)
            if not _ACCOUNT.fullmatch(run_as):
                raise self.error(f"invalid run_as user {run_as!r}", (*where, "run_as"))
            kw["run_as"] = run_as
        if "capabilities" in t:
            kw["capabilities"] = self.capabilities(t, "capabilities", where)
        if "env" in t:
            env = self.typed(t, "env", dict, "a table NAME = value", where)
            for key, value in env.items():
                if not _ENV_NAME.fullmatch(key) or type(value) is not str or "\0" in value:
                    raise self.error(f"invalid env entry {key!r} = {value!r}", (*where, "env"))
            kw["env"] = env
        if "timeout" in t:
            kw["timeout"] = self.timeout(t, "timeout", where)
        return NativeCommand(**kw)

    def read_argv(self, items: Any, where: tuple) -> tuple[tuple, Any]:
        if not isinstance(items, list):
            raise self.error("command args must be a list", where)
        patterns: list[str | Constraint] = []
        rest: Any = None
        for pos, item in enumerate(items):
            last = pos == len(items) - 1
            if type(item) is str:
                if "\0" in item:
                    raise self.error(f"args[{pos}] contains a NUL byte", where)
                patterns.append(item)
                continue
            if isinstance(item, dict) and ("rest" in item or "chain" in item):
                if not last:
                    raise self.error(f"args[{pos}]: rest/chain must be the last element", where)
                rest = self.read_tail(item, pos, where)
                continue
            patterns.append(self.constraint(item, (*where,), argv=True))
        return tuple(patterns), rest

    def read_tail(self, item: dict, pos: int, where: tuple) -> Any:
        if set(item) == {"chain"}:
            if item["chain"] is not True:
                raise self.error(f"args[{pos}]: chain takes the value true", where)
            return CHAIN
        if set(item) != {"rest"}:
            raise self.error(
                f"args[{pos}]: {{rest = ...}} or {{chain = true}} takes no other keys, "
                f"got {sorted(item)}",
                where,
            )
        spec = item["rest"]
        if spec is True:
            return Str()
        if not isinstance(spec, dict):
            raise self.error(f"args[{pos}]: rest takes true or a constraint table", where)
        return self.constraint(spec, where, argv=True)


_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")


def parse_policy(text: str, path: str) -> PolicyFragment:
    """Parse one native policy file's text; errors name ``path`` and a line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_POS.search(message)
        line = int(m.group(1)) if m else None
        message = _TOML_POS.sub("", message).strip()
        raise PolicyError(f"invalid TOML: {message}", path=path, line=line) from None
    return _Reader(path, text).read(doc)
