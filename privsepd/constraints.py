"""Typed constraints on the arguments of privileged functions and commands.

A constraint is the only thing standing between a (possibly compromised)
client's argument and a privileged operation, so every class here is
deliberately narrow: type-strict (``True`` is not ``1``, ``"1"`` is not ``1``),
whole-value matching (no ``$``-before-newline loophole), and deny on anything
it does not positively recognise. Constraints are built from root-owned policy
(see :func:`constraint_from_spec` for the TOML form) and are immutable.

Every failure raises :class:`privsepd.errors.ConstraintError` carrying the
argument name, the rule (``describe()``) and a short detail.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from typing import Any

from privsepd.errors import ConstraintError, PolicyError
from privsepd.regex import compile_regex

__all__ = [
    "CIDR",
    "MAC",
    "Bool",
    "Bytes",
    "Choice",
    "Constraint",
    "DecimalInt",
    "IPAddress",
    "IntRange",
    "InterfaceName",
    "OneOf",
    "PathUnder",
    "Regex",
    "Str",
    "constraint_from_spec",
]

DEFAULT_MAX_LEN = 4096
_SHOWN = 60


def _show(value: object) -> str:
    """A bounded repr of a client value, safe to put in an error or audit line."""
    text = repr(value)
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    return text


def _type_name(value: object) -> str:
    return type(value).__name__


class Constraint:
    """Base class: one rule an argument value must satisfy."""

    __slots__ = ()

    def check(self, argument: str, value: object) -> None:
        """Raise ConstraintError unless ``value`` satisfies this rule."""
        problem = self._problem(value)
        if problem is not None:
            raise ConstraintError(argument, self.describe(), problem)

    def matches(self, value: object) -> bool:
        """True when ``value`` passes; for matchers that try several rules."""
        return self._problem(value) is None

    def describe(self) -> str:
        """Human-readable rule, used in errors, audit records and `explain`."""
        raise NotImplementedError

    def _problem(self, value: object) -> str | None:
        """Why ``value`` fails, or None when it passes."""
        raise NotImplementedError

    def _key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _need_str(value: object) -> str | None:
    if type(value) is not str:
        return f"expected str, got {_type_name(value)}"
    return None


def _check_max_len(max_len: object) -> int:
    if type(max_len) is not int or max_len < 0:
        raise PolicyError(f"max_len must be a non-negative integer, got {max_len!r}")
    return max_len


class _TextConstraint(Constraint):
    """A constraint on str values: the type is checked here, once for all of them."""

    __slots__ = ()

    def _problem(self, value: object) -> str | None:
        problem = _need_str(value)
        if problem:
            return problem
        assert isinstance(value, str)
        return self._text_problem(value)

    def _text_problem(self, value: str) -> str | None:
        raise NotImplementedError


class Regex(_TextConstraint):
    """A str that the whole pattern matches (``re.fullmatch``).

    ``fullmatch`` must consume the entire value, so ``'[a-z]+$'`` does not
    admit ``'abc\\n'`` as oslo.rootwrap's ``re.match(pattern + '$')`` does.
    Values longer than ``max_len`` are refused before matching, and a pattern
    whose matching time can be exponential in the value's length (``(a+)+``,
    ``(a|a)*``: :func:`privsepd.regex.exponential_reason`) is refused here,
    since a helper cannot interrupt a match. Compiled by
    :func:`privsepd.regex.compile_regex`: any pattern re cannot compile is a
    PolicyError. Classes are ASCII
    (``re.ASCII``): ``\\d`` is ``[0-9]``, not also ``'١٢٣'`` or ``'１２'``, which
    ``int()`` and many programs read as digits too.
    """

    __slots__ = ("pattern", "max_len", "_compiled")

    def __init__(self, pattern: str, max_len: int = DEFAULT_MAX_LEN):
        if type(pattern) is not str:
            raise PolicyError(f"regex pattern must be a string, got {pattern!r}")
        # any failure, or exponential matching time: PolicyError
        self._compiled = compile_regex(pattern, re.ASCII, refuse_exponential=True)
        self.pattern = pattern
        self.max_len = _check_max_len(max_len)

    def describe(self) -> str:
        return f"regex {self.pattern!r}"

    def _text_problem(self, value: str) -> str | None:
        if len(value) > self.max_len:
            return f"longer than {self.max_len} characters"
        if self._compiled.fullmatch(value) is None:
            return f"{_show(value)} does not match"
        return None

    def _key(self) -> tuple[Any, ...]:
        return (self.pattern, self.max_len)


_SCALARS = (str, bytes, int, float, bool, type(None))


class Choice(Constraint):
    """Exactly one of a fixed set of scalar values, compared type-strictly."""

    __slots__ = ("values",)

    def __init__(self, *values: object):
        if not values:
            raise PolicyError("choice needs at least one value")
        for v in values:
            if type(v) not in _SCALARS:
                raise PolicyError(f"choice values must be scalars, got {v!r}")
        self.values = tuple(values)

    def describe(self) -> str:
        return f"choice {list(self.values)!r}"

    def _problem(self, value: object) -> str | None:
        for v in self.values:
            if type(v) is type(value) and v == value:
                return None
        return f"{_show(value)} is not one of the choices"

    def _key(self) -> tuple[Any, ...]:
        return tuple((type(v).__name__, v) for v in self.values)


class IntRange(Constraint):
    """An int (never a bool, never a float or numeric str) within [min, max]."""

    __slots__ = ("min", "max")

    def __init__(self, min: int | None = None, max: int | None = None):
        for name, bound in (("min", min), ("max", max)):
            if bound is not None and type(bound) is not int:
                raise PolicyError(f"int_range {name} must be an integer, got {bound!r}")
        if min is not None and max is not None and min > max:
            raise PolicyError(f"int_range min {min} is greater than max {max}")
        self.min = min
        self.max = max

    def describe(self) -> str:
        lo = "-inf" if self.min is None else str(self.min)
        hi = "+inf" if self.max is None else str(self.max)
        return f"int_range [{lo}, {hi}]"

    def _problem(self, value: object) -> str | None:
        if type(value) is not int:
            return f"expected int, got {_type_name(value)}"
        if self.min is not None and value < self.min:
            return f"{value} is below {self.min}"
        if self.max is not None and value > self.max:
            return f"{value} is above {self.max}"
        return None

    def _key(self) -> tuple[Any, ...]:
        return (self.min, self.max)


_DECIMAL = re.compile(r"0|-?[1-9][0-9]*")


class DecimalInt(_TextConstraint):
    """A str spelling an int in canonical decimal, within an IntRange.

    For argv, where every argument is a string: ``"1500"`` passes
    ``int_range [68, 9000]`` but ``"01500"``, ``"+1500"``, ``" 1500"``,
    ``"1_500"`` and ``"0x5dc"`` do not, so the privileged program sees
    exactly the number the rule judged.
    """

    __slots__ = ("range",)

    def __init__(self, range: IntRange):
        if not isinstance(range, IntRange):
            raise PolicyError(f"DecimalInt needs an IntRange, got {range!r}")
        self.range = range

    def describe(self) -> str:
        return self.range.describe() + " (decimal string)"

    def _text_problem(self, value: str) -> str | None:
        if len(value) > 64 or _DECIMAL.fullmatch(value) is None:
            return f"{_show(value)} is not a plain decimal integer"
        return self.range._problem(int(value))

    def _key(self) -> tuple[Any, ...]:
        return self.range._key()


def _realpath(path: str, strict: bool) -> str:
    """os.path.realpath(path, strict=...), which Python 3.9 lacks."""
    if sys.version_info >= (3, 10):
        return os.path.realpath(path, strict=strict)
    real = os.path.realpath(path)
    if strict:
        os.stat(path)  # the errors strict= raises: ENOENT, ELOOP, ENOTDIR, EACCES
    return real


class PathUnder(Constraint):
    """An absolute path whose real location is ``prefix`` or inside it.

    Symlinks and ``..`` are resolved (``os.path.realpath``; strict when
    ``must_exist``) and containment is decided by path components, so prefix
    ``/data`` admits ``/data/x`` but not ``/data2/x``. The prefix is resolved
    too, at check time, so ``/var/run`` works when it is a link to ``/run``.

    The check is only as good as the moment it runs: whoever may write a
    directory on the path can swap a component for a symlink right after
    it. A privileged function therefore acts through :meth:`open` (or
    :meth:`open_fd`), which opens the very object judged, beneath the base,
    without following any symlink (``openat2``, see :mod:`privsepd.paths`);
    :meth:`resolve`'s string is for messages, never for a later ``open``.
    """

    __slots__ = ("prefix", "must_exist")

    def __init__(self, prefix: str, must_exist: bool = False):
        if type(prefix) is not str or not prefix.startswith("/") or "\0" in prefix:
            raise PolicyError(f"path_under prefix must be an absolute path, got {prefix!r}")
        if type(must_exist) is not bool:
            raise PolicyError(f"must_exist must be true or false, got {must_exist!r}")
        self.prefix = os.path.normpath(prefix)
        self.must_exist = must_exist

    def describe(self) -> str:
        suffix = " (must exist)" if self.must_exist else ""
        return f"path_under {self.prefix!r}{suffix}"

    def resolve(self, argument: str, value: object) -> str:
        """Check ``value`` and return its resolved real path."""
        problem, real = self._resolve(value)
        if problem is not None:
            raise ConstraintError(argument, self.describe(), problem)
        assert real is not None
        return real

    def _resolve(self, value: object) -> tuple[str | None, str | None]:
        problem = _need_str(value)
        if problem:
            return problem, None
        assert isinstance(value, str)
        if "\0" in value:
            return "contains a NUL byte", None
        if not value.startswith("/"):
            return f"{_show(value)} is not an absolute path", None
        if len(value) > DEFAULT_MAX_LEN:
            return f"longer than {DEFAULT_MAX_LEN} characters", None
        try:
            real = _realpath(value, strict=self.must_exist)
            base = os.path.realpath(self.prefix)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return f"{_show(value)} cannot be resolved: {reason}", None
        if base != "/" and real != base and not real.startswith(base + "/"):
            return f"{_show(value)} resolves to {_show(real)}, outside {base!r}", None
        if _has_symlink(real):
            return f"{_show(value)} has a symlink realpath could not resolve (loop?)", None
        return None, real

    def _problem(self, value: object) -> str | None:
        return self._resolve(value)[0]

    def open_fd(self, value: object, flags: int, mode: int = 0o666, argument: str = "path") -> int:
        """Check ``value`` and open it with ``flags`` (``O_NOFOLLOW`` added); return the fd.

        No component below the base may be a symlink at open time, and what
        is opened lies beneath the base whatever was swapped since the check
        (the kernel enforces it). A race makes the call fail with
        ConstraintError, never open something else.
        """
        from privsepd.paths import PathRefused, open_beneath

        self.check(argument, value)
        assert isinstance(value, str)
        try:
            return open_beneath(self.prefix, value, flags, mode)
        except PathRefused as exc:
            raise ConstraintError(argument, self.describe(), exc.detail) from None

    def open(
        self,
        value: object,
        mode: str = "r",
        *,
        perms: int = 0o666,
        argument: str = "path",
        **kw: Any,
    ) -> Any:
        """Check ``value`` and open it like the builtin ``open(value, mode, **kw)``, race-free.

        ``perms`` is the permission of a created file (before the umask).
        """
        fd = self.open_fd(value, _open_flags(mode), perms, argument)
        try:
            return os.fdopen(fd, mode, **kw)
        except BaseException:
            os.close(fd)
            raise

    def _key(self) -> tuple[Any, ...]:
        return (self.prefix, self.must_exist)


def _open_flags(mode: str) -> int:
    """os.open flags for a builtin-open mode string ('r', 'wb', 'a+', 'x', ...)."""
    if type(mode) is not str or len(set(mode)) != len(mode) or set(mode) - set("rwaxbt+"):
        raise ValueError(f"invalid mode {mode!r}")
    kinds = [c for c in mode if c in "rwax"]
    if len(kinds) != 1:
        raise ValueError(f"mode {mode!r} needs exactly one of r, w, a, x")
    flags = {
        "r": os.O_RDONLY,
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    }[kinds[0]]
    if "+" in mode:
        flags = (flags & ~(os.O_RDONLY | os.O_WRONLY)) | os.O_RDWR
    return flags


def _has_symlink(real: str) -> bool:
    """True if an existing component of a realpath result is still a symlink.

    realpath gives up on symlink loops and returns the rest unresolved; the
    kernel would resolve it later, possibly elsewhere once the loop is gone.
    """
    prefix = ""
    for part in real.split("/")[1:]:
        if not part:
            continue
        prefix += "/" + part
        try:
            st = os.lstat(prefix)
        except OSError:
            return False  # the rest does not exist yet: nothing left to resolve
        if stat.S_ISLNK(st.st_mode):
            return True
    return False


def _check_version(version: object, what: str) -> int | None:
    if version is not None and (type(version) is not int or version not in (4, 6)):
        raise PolicyError(f"{what} version must be 4 or 6, got {version!r}")
    return version


class IPAddress(_TextConstraint):
    """An IPv4/IPv6 address as a str; no IPv6 zone (``%eth0``) suffix."""

    __slots__ = ("version",)

    def __init__(self, version: int | None = None):
        self.version = _check_version(version, "ip")

    def describe(self) -> str:
        return "ip address" if self.version is None else f"ipv{self.version} address"

    def _text_problem(self, value: str) -> str | None:
        if "%" in value or not value.isascii():
            return f"{_show(value)} is not a plain IP address"
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return f"{_show(value)} is not an IP address"
        if self.version is not None and addr.version != self.version:
            return f"{_show(value)} is not IPv{self.version}"
        return None

    def _key(self) -> tuple[Any, ...]:
        return (self.version,)


_PREFIXLEN = re.compile(r"/[0-9]{1,3}")


class CIDR(_TextConstraint):
    """A network ``address/prefixlen`` as a str.

    The ``/prefixlen`` is required and must be digits (no netmask form), so
    the value means exactly one network to whatever tool receives it. With
    ``strict`` (the default) host bits must be zero.
    """

    __slots__ = ("version", "strict")

    def __init__(self, version: int | None = None, strict: bool = True):
        self.version = _check_version(version, "cidr")
        if type(strict) is not bool:
            raise PolicyError(f"strict must be true or false, got {strict!r}")
        self.strict = strict

    def describe(self) -> str:
        kind = "cidr" if self.version is None else f"ipv{self.version} cidr"
        return kind if self.strict else kind + " (host bits allowed)"

    def _text_problem(self, value: str) -> str | None:
        slash = value.rfind("/")
        if slash < 0 or "%" in value or not value.isascii():
            return f"{_show(value)} is not address/prefixlen"
        if not _PREFIXLEN.fullmatch(value[slash:]):
            return f"{_show(value)} has no numeric prefix length"
        try:
            net = ipaddress.ip_network(value, strict=self.strict)
        except ValueError as exc:
            return f"{_show(value)} is not a valid network: {exc}"
        if self.version is not None and net.version != self.version:
            return f"{_show(value)} is not IPv{self.version}"
        return None

    def _key(self) -> tuple[Any, ...]:
        return (self.version, self.strict)


_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")


class MAC(_TextConstraint):
    """An Ethernet address written ``aa:bb:cc:dd:ee:ff`` (either case)."""

    __slots__ = ()

    def describe(self) -> str:
        return "mac address"

    def _text_problem(self, value: str) -> str | None:
        if _MAC.fullmatch(value) is None:
            return f"{_show(value)} is not aa:bb:cc:dd:ee:ff"
        return None

    def _key(self) -> tuple[Any, ...]:
        return ()


IFNAMSIZ = 16


class InterfaceName(_TextConstraint):
    """A Linux network interface name.

    Kernel rules (``dev_valid_name``): 1..15 bytes, not ``.`` or ``..``, no
    ``/``, ``:`` or whitespace. privsepd is stricter because names end up in
    argv: printable ASCII only and no leading ``-`` (option injection).
    """

    __slots__ = ()

    def describe(self) -> str:
        return "interface name"

    def _text_problem(self, value: str) -> str | None:
        if not 0 < len(value) < IFNAMSIZ:
            return f"{_show(value)} is not 1..{IFNAMSIZ - 1} characters"
        if value in (".", ".."):
            return f"{value!r} is reserved"
        if value.startswith("-"):
            return f"{_show(value)} starts with '-'"
        for ch in value:
            if not "!" <= ch <= "~" or ch in "/:":
                return f"{_show(value)} contains {ch!r}"
        return None

    def _key(self) -> tuple[Any, ...]:
        return ()


class Str(_TextConstraint):
    """Any str up to ``max_len`` characters, without NUL bytes."""

    __slots__ = ("max_len",)

    def __init__(self, max_len: int = DEFAULT_MAX_LEN):
        self.max_len = _check_max_len(max_len)

    def describe(self) -> str:
        return f"str (max {self.max_len})"

    def _text_problem(self, value: str) -> str | None:
        if len(value) > self.max_len:
            return f"longer than {self.max_len} characters"
        if "\0" in value:
            return "contains a NUL byte"
        return None

    def _key(self) -> tuple[Any, ...]:
        return (self.max_len,)


class Bytes(Constraint):
    """Any bytes value up to ``max_len`` bytes (bytearray is not bytes)."""

    __slots__ = ("max_len",)

    def __init__(self, max_len: int = 65536):
        self.max_len = _check_max_len(max_len)

    def describe(self) -> str:
        return f"bytes (max {self.max_len})"

    def _problem(self, value: object) -> str | None:
        if type(value) is not bytes:
            return f"expected bytes, got {_type_name(value)}"
        if len(value) > self.max_len:
            return f"longer than {self.max_len} bytes"
        return None

    def _key(self) -> tuple[Any, ...]:
        return (self.max_len,)


class Bool(Constraint):
    """``True`` or ``False``; not 0/1, not "true"."""

    __slots__ = ()

    def describe(self) -> str:
        return "bool"

    def _problem(self, value: object) -> str | None:
        if type(value) is not bool:
            return f"expected bool, got {_type_name(value)}"
        return None

    def _key(self) -> tuple[Any, ...]:
        return ()


class OneOf(Constraint):
    """Passes when any of the given constraints passes."""

    __slots__ = ("constraints",)

    def __init__(self, *constraints: Constraint):
        if not constraints:
            raise PolicyError("one_of needs at least one constraint")
        for c in constraints:
            if not isinstance(c, Constraint):
                raise PolicyError(f"one_of members must be constraints, got {c!r}")
        self.constraints = tuple(constraints)

    def describe(self) -> str:
        return "one_of [" + ", ".join(c.describe() for c in self.constraints) + "]"

    def _problem(self, value: object) -> str | None:
        problems = []
        for c in self.constraints:
            problem = c._problem(value)
            if problem is None:
                return None
            problems.append(problem)
        return "; ".join(problems)

    def _key(self) -> tuple[Any, ...]:
        return self.constraints


# --- TOML form -------------------------------------------------------------


def _flag(kind: str, value: object) -> None:
    if value is not True:
        raise PolicyError(f"{kind} takes the value true, got {value!r}")


def _version_flag(kind: str, value: object) -> int | None:
    if value is True:
        return None
    if type(value) is int and value in (4, 6):
        return value
    raise PolicyError(f"{kind} takes true, 4 or 6, got {value!r}")


def _from_regex(v: Any, o: Mapping[str, Any]) -> Constraint:
    return Regex(v, **o)


def _from_choice(v: Any, o: Mapping[str, Any]) -> Constraint:
    if type(v) is not list:
        raise PolicyError(f"choice takes a list of values, got {v!r}")
    return Choice(*v)


def _from_int_range(v: Any, o: Mapping[str, Any]) -> Constraint:
    if type(v) is list and len(v) == 2:
        return IntRange(v[0], v[1])
    if isinstance(v, dict):
        unknown = set(v) - {"min", "max"}
        if unknown:
            raise PolicyError(f"int_range table has unknown keys {sorted(unknown)}")
        return IntRange(v.get("min"), v.get("max"))
    raise PolicyError(f"int_range takes [min, max] or {{min = .., max = ..}}, got {v!r}")


def _from_path_under(v: Any, o: Mapping[str, Any]) -> Constraint:
    return PathUnder(v, **o)


def _from_ip(v: Any, o: Mapping[str, Any]) -> Constraint:
    return IPAddress(_version_flag("ip", v))


def _from_cidr(v: Any, o: Mapping[str, Any]) -> Constraint:
    return CIDR(_version_flag("cidr", v), **o)


def _from_mac(v: Any, o: Mapping[str, Any]) -> Constraint:
    _flag("mac", v)
    return MAC()


def _from_ifname(v: Any, o: Mapping[str, Any]) -> Constraint:
    _flag("ifname", v)
    return InterfaceName()


def _from_str(v: Any, o: Mapping[str, Any]) -> Constraint:
    _flag("str", v)
    return Str(**o)


def _from_bytes(v: Any, o: Mapping[str, Any]) -> Constraint:
    _flag("bytes", v)
    return Bytes(**o)


def _from_bool(v: Any, o: Mapping[str, Any]) -> Constraint:
    _flag("bool", v)
    return Bool()


def _from_one_of(v: Any, o: Mapping[str, Any]) -> Constraint:
    if type(v) is not list or not v:
        raise PolicyError(f"one_of takes a non-empty list of constraint tables, got {v!r}")
    return OneOf(*(constraint_from_spec(item) for item in v))


# kind -> (builder, modifier keys that kind accepts)
_KINDS: dict[str, tuple[Callable[[Any, Mapping[str, Any]], Constraint], frozenset[str]]] = {
    "regex": (_from_regex, frozenset({"max_len"})),
    "choice": (_from_choice, frozenset()),
    "int_range": (_from_int_range, frozenset()),
    "path_under": (_from_path_under, frozenset({"must_exist"})),
    "ip": (_from_ip, frozenset()),
    "cidr": (_from_cidr, frozenset({"strict"})),
    "mac": (_from_mac, frozenset()),
    "ifname": (_from_ifname, frozenset()),
    "str": (_from_str, frozenset({"max_len"})),
    "bytes": (_from_bytes, frozenset({"max_len"})),
    "bool": (_from_bool, frozenset()),
    "one_of": (_from_one_of, frozenset()),
}

SPEC_KINDS = frozenset(_KINDS)


def constraint_from_spec(spec: Mapping[str, Any]) -> Constraint:
    """Build a constraint from its TOML table, e.g. ``{int_range = [68, 9000]}``.

    Exactly one kind key is required; the only other keys allowed are that
    kind's modifiers. Anything else is a PolicyError, because a misspelt
    modifier silently dropped could widen what the rule admits.
    """
    if not isinstance(spec, Mapping):
        raise PolicyError(f"a constraint must be a table, got {spec!r}")
    kinds = [k for k in spec if k in _KINDS]
    if len(kinds) != 1:
        if not kinds:
            unknown = sorted(set(spec))
            hint = f" (unknown keys {unknown})" if unknown else ""
            raise PolicyError(f"constraint needs exactly one of {sorted(_KINDS)}{hint}")
        raise PolicyError(f"constraint has several kinds {kinds}; use one_of to combine")
    kind = kinds[0]
    builder, modifiers = _KINDS[kind]
    options = {k: v for k, v in spec.items() if k != kind}
    unknown = sorted(set(options) - modifiers)
    if unknown:
        allowed = f"; {kind} accepts {sorted(modifiers)}" if modifiers else ""
        raise PolicyError(f"unknown key(s) {unknown} in {kind} constraint{allowed}")
    return builder(spec[kind], options)
