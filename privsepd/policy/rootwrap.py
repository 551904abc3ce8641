"""Load oslo.rootwrap policy: ``rootwrap.conf`` and ``.filters`` directories.

Existing OpenStack policy must load unchanged and decide the same way, so
the INI reader reproduces ``configparser.RawConfigParser`` (the parser oslo
uses) line for line: full-line ``#``/``;`` comments, ``=``/``:`` delimiters,
indented continuation lines, lower-cased option names, a ``[DEFAULT]``
section whose options leak into every section, and, for ``.filters``, a
later duplicate name silently replacing an earlier one. Unlike
configparser it keeps the line of every option, so every error and warning
names ``file:line``.

Where oslo's loading is unsafe but legal, privsepd keeps oslo's decision
and records a :class:`PolicyWarning` for the linter: files in a filters
directory are read in sorted order (oslo: ``os.listdir`` order) whatever
their suffix; untrimmed list entries are kept verbatim. Where it is a hole,
privsepd refuses: relative (cwd-dependent) ``filters_path`` and
``exec_dirs`` entries are ignored; a filters file that oslo would crash on
(no ``[Filters]`` section, too few columns) is a :class:`PolicyError`.

Every file and directory read must pass ``trust.check_trusted`` (root-owned,
not group/world-writable up to ``/``); ``trust`` defaults to ROOT_ONLY.
"""

from __future__ import annotations

import gc
import logging
import logging.handlers
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from privsepd.errors import PolicyError
from privsepd.policy.filters import (
    FILTER_CLASSES,
    RC_BADCONFIG,
    RC_NOCOMMAND,
    RC_NOEXECFOUND,
    RC_UNAUTHORIZED,
    SIGNAL_BASE,
    CommandFilter,
    Decision,
    EnvFilter,
    Filter,
    KillFilter,
    Miss,
    Source,
    dangerous_env_name,
)
from privsepd.policy.index import FilterIndex
from privsepd.regex import compile_regex

if TYPE_CHECKING:
    from privsepd.policy.trust import Trust

__all__ = [
    "ConfigValueError",
    "PolicyWarning",
    "RC_BADCONFIG",
    "RC_NOCOMMAND",
    "RC_NOEXECFOUND",
    "RC_UNAUTHORIZED",
    "SIGNAL_BASE",
    "RootwrapConfig",
    "RootwrapPolicy",
    "load_config",
    "load_filters",
    "lint_filter",
    "load_policy",
    "parse_filters",
]


class ConfigValueError(PolicyError):
    """A rootwrap.conf option has a bad value (oslo: 'Incorrect value in CONF: ...')."""


def _trusted_dirs(
    dirs: Sequence[str],
    path: str,
    warnings: list,
    trust: Trust | None = None,
    what: tuple[str, str] = ("untrusted-path-dir", "$PATH entry"),
) -> tuple[str, ...]:
    """Directories fit to look executables up in, as root ($PATH or exec_dirs).

    Without exec_dirs, oslo.rootwrap searches the caller's $PATH (sudo
    without secure_path passes it through), so a directory the caller can
    write supplies the "allowed" binary; a 0777 directory in exec_dirs does
    the same. privsepd keeps only entries that are absolute and root-owned,
    not group/world-writable, all the way up (and that exist).
    """
    from privsepd.errors import PolicyError as _PolicyError
    from privsepd.policy import trust as trust_module

    code, label = what
    kept = []
    for d in dirs:
        try:
            if not os.path.isabs(d):
                raise _PolicyError("not an absolute path")
            trust_module.check_trusted(d, trust_module.ROOT_ONLY if trust is None else trust)
        except (_PolicyError, OSError) as exc:
            warnings.append(PolicyWarning(code, f"{label} {d!r} ignored: {exc}", path))
            continue
        kept.append(d)
    return tuple(kept)


@dataclass(frozen=True)
class PolicyWarning:
    """Legal but risky policy, for the linter: a stable code, message and place."""

    code: str
    message: str
    path: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.code}: {self.message}"


# -- INI reader (RawConfigParser semantics, with line numbers) -----------------


class _Option(NamedTuple):
    value: str
    line: int


class _Ini:
    """Sections of one INI text: {section: {option: _Option}} plus defaults."""

    def __init__(self) -> None:
        self.defaults: dict[str, _Option] = {}
        self.sections: dict[str, dict[str, _Option]] = {}
        self.duplicates: list[tuple[str, str, int]] = []  # (section, option, line)

    def items(self, section: str) -> list[tuple[str, _Option]]:
        merged = dict(self.defaults)
        merged.update(self.sections[section])
        return list(merged.items())


def _parse_ini(text: str, path: str, strict: bool) -> _Ini:
    """Parse like RawConfigParser(strict=strict).read(path); errors name the line.

    Same rules as configparser's regexps (SECTCRE, OPTCRE, NONSPACECRE),
    written with str methods because loading 10,000 rules must be fast.
    A value is '\\n'.join(first line, continuation lines) with blank lines
    in between kept and trailing ones dropped, as configparser does.
    """
    ini = _Ini()
    cursect: dict[str, _Option] | None = None
    sectname: str | None = None
    optname: str | None = None
    blanks = 0  # blank lines seen since the current option's last line
    indent_level = 0
    seen: set = set()
    first_error: tuple[int, str] | None = None
    sections: dict[str, dict[str, _Option]] = {}
    defaults: dict[str, _Option] = {}
    new_option = tuple.__new__  # _Option(...) minus NamedTuple's Python-level __new__
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            blanks += 1
            continue
        if stripped[0] in "#;":
            continue  # a comment never adds an empty line to a value
        cur_indent = len(line) - len(line.lstrip()) if line[0].isspace() else 0
        if cur_indent > indent_level and cursect is not None and optname:
            old = cursect[optname]
            cursect[optname] = _Option(old.value + "\n" * (blanks + 1) + stripped, old.line)
            blanks = 0
            continue
        blanks = 0
        indent_level = cur_indent
        if stripped[0] == "[":
            close = stripped.rfind("]")
            if close > 1:  # SECTCRE: '[' + at least one char + ']'
                sectname = stripped[1:close]
                if sectname in sections:
                    if strict and sectname in seen:
                        raise PolicyError(f"section [{sectname}] already exists", path, lineno)
                    cursect = sections[sectname]
                    seen.add(sectname)
                elif sectname == "DEFAULT":
                    cursect = defaults
                else:
                    cursect = {}
                    sections[sectname] = cursect
                    seen.add(sectname)
                optname = None
                continue
        if cursect is None:
            raise PolicyError("no section header before the first option", path, lineno)
        # OPTCRE: the option ends at the first '=' or ':'
        eq = stripped.find("=")
        colon = stripped.find(":")
        delim = colon if eq < 0 or (0 <= colon < eq) else eq
        if delim < 0:
            if first_error is None:
                first_error = (lineno, stripped)
            continue
        optname = stripped[:delim].rstrip().lower()
        if not optname and first_error is None:
            first_error = (lineno, stripped)
        if strict:
            if (sectname, optname) in seen:
                raise PolicyError(f"option {optname!r} already set in [{sectname}]", path, lineno)
            seen.add((sectname, optname))
        if optname in cursect:
            ini.duplicates.append((sectname or "", optname, lineno))
        cursect[optname] = new_option(_Option, (stripped[delim + 1 :].strip(), lineno))
    if first_error is not None:
        raise PolicyError(f"cannot parse line {first_error[1]!r}", path, first_error[0])
    ini.defaults = defaults
    ini.sections = sections
    return ini


# -- trust -----------------------------------------------------------------------


def _check(path: str, trust: Trust | None) -> None:
    from privsepd.policy import trust as trust_module

    trust_module.check_trusted(path, trust_module.ROOT_ONLY if trust is None else trust)


def _read(path: str, trust: Trust | None) -> str:
    from privsepd.policy import trust as trust_module

    return trust_module.read_trusted(path, trust_module.ROOT_ONLY if trust is None else trust)


# -- rootwrap.conf ----------------------------------------------------------------


@dataclass(frozen=True)
class RootwrapConfig:
    """Every option oslo.rootwrap reads from ``[DEFAULT]``, with its defaults.

    ``exec_dirs`` defaults to ``$PATH`` at load time, as in oslo. Relative
    entries of ``filters_path``/``exec_dirs`` (cwd-dependent) are dropped
    and reported in ``warnings``.
    """

    path: str
    filters_path: tuple[str, ...]
    exec_dirs: tuple[str, ...]
    use_syslog: bool = False
    syslog_log_facility: int = logging.handlers.SysLogHandler.LOG_SYSLOG
    syslog_log_level: int = logging.ERROR
    daemon_timeout: int = 600
    rlimit_nofile: int = 1024
    #: privsepd: contexts (oslo.privsep pypaths) privsep-helper may start.
    privsep_contexts: tuple[str, ...] = ()
    warnings: tuple[PolicyWarning, ...] = ()


_BOOLEANS = {"1": True, "yes": True, "true": True, "on": True}
_BOOLEANS.update({"0": False, "no": False, "false": False, "off": False})


def _split_list(
    value: str, sep: str, what: str, path: str, line: int | None, warnings: list[PolicyWarning]
) -> tuple[str, ...]:
    kept = []
    for entry in value.split(sep):
        if entry != entry.strip():
            warnings.append(
                PolicyWarning(
                    "untrimmed-entry",
                    f"{what} entry {entry!r} has surrounding whitespace (used verbatim)",
                    path,
                    line,
                )
            )
        if not os.path.isabs(entry):
            warnings.append(
                PolicyWarning(
                    "relative-entry",
                    f"{what} entry {entry!r} is not absolute and would depend on the "
                    "current directory; ignored",
                    path,
                    line,
                )
            )
            continue
        kept.append(entry)
    return tuple(kept)


def _facility(value: str) -> int | None:
    handler = logging.handlers.SysLogHandler
    attr = getattr(handler, value, None)
    if type(attr) is int:
        return attr
    return handler.facility_names.get(value)


def parse_config(text: str, path: str) -> RootwrapConfig:
    """Interpret rootwrap.conf text the way oslo.rootwrap's RootwrapConfig does."""
    ini = _parse_ini(text, path, strict=True)
    opts = ini.defaults
    warnings: list[PolicyWarning] = []

    def bad(name: str, message: str) -> ConfigValueError:
        return ConfigValueError(message, path, opts[name].line)

    if "filters_path" not in opts:
        raise PolicyError("missing option filters_path in [DEFAULT]", path)
    fp = opts["filters_path"]
    filters_path = _split_list(fp.value, ",", "filters_path", path, fp.line, warnings)
    if "exec_dirs" in opts:
        ed = opts["exec_dirs"]
        exec_dirs = _split_list(ed.value, ",", "exec_dirs", path, ed.line, warnings)
    elif "PATH" in os.environ:
        exec_dirs = _trusted_dirs(
            _split_list(os.environ["PATH"], ":", "$PATH", path, None, warnings), path, warnings
        )
    else:
        exec_dirs = ()
    kwargs: dict = {}
    if "syslog_log_facility" in opts:
        v = opts["syslog_log_facility"].value
        facility = _facility(v)
        if facility is None:
            raise bad("syslog_log_facility", f"Unexpected syslog_log_facility: {v}")
        kwargs["syslog_log_facility"] = facility
    if "syslog_log_level" in opts:
        v = opts["syslog_log_level"].value
        level = logging.getLevelName(v.upper())
        if not isinstance(level, int):
            raise bad("syslog_log_level", f"Unexpected syslog_log_level: {v!r}")
        kwargs["syslog_log_level"] = level
    if "use_syslog" in opts:
        v = opts["use_syslog"].value
        if v.lower() not in _BOOLEANS:
            raise bad("use_syslog", f"Not a boolean: {v}")
        kwargs["use_syslog"] = _BOOLEANS[v.lower()]
    for name in ("daemon_timeout", "rlimit_nofile"):
        if name in opts:
            v = opts[name].value
            try:
                kwargs[name] = int(v)
            except ValueError:
                raise bad(name, f"invalid literal for int() with base 10: {v!r}") from None
    if "privsep_contexts" in opts:
        pc = opts["privsep_contexts"]
        names = tuple(n.strip() for n in pc.value.split(",") if n.strip())
        for n in names:
            if not _dotted_name(n):
                raise bad("privsep_contexts", f"not a privsep context path: {n!r}")
        kwargs["privsep_contexts"] = names
    return RootwrapConfig(
        path=path,
        filters_path=filters_path,
        exec_dirs=exec_dirs,
        warnings=tuple(warnings),
        **kwargs,
    )


def load_config(path: str, trust: Trust | None = None) -> RootwrapConfig:
    """Read and interpret a trusted rootwrap.conf.

    ``exec_dirs`` entries get the trust rule ``$PATH`` entries get (see
    :func:`_trusted_dirs`): an entry that is missing, or that anyone but
    root can write, is dropped and reported as ``untrusted-exec-dir``.
    """
    import dataclasses

    config = parse_config(_read(path, trust), path)
    warnings = list(config.warnings)
    kept = _trusted_dirs(
        config.exec_dirs, path, warnings, trust, ("untrusted-exec-dir", "exec_dirs entry")
    )
    if kept == config.exec_dirs:
        return config
    return dataclasses.replace(config, exec_dirs=kept, warnings=tuple(warnings))


# -- .filters ------------------------------------------------------------------------


_MIN_COLUMNS = {"ReadFileFilter": 1, "KillFilter": 2}
_NEEDS = {"ReadFileFilter": "a file", "KillFilter": "run_as and an executable"}


def _build(name: str, value: str, source: Source, warnings: list[PolicyWarning]) -> Filter | None:
    columns = list(map(str.strip, value.split(",")))
    kind = columns[0]
    cls = FILTER_CLASSES.get(kind)
    if cls is None:
        warnings.append(
            PolicyWarning(
                "unknown-class",
                f"unknown filter class {kind!r}; skipped",
                source.path,
                source.line,
            )
        )
        return None
    if len(columns) <= _MIN_COLUMNS.get(kind, 2):
        what = _NEEDS.get(kind, "an executable and run_as")
        raise PolicyError(f"{kind} {name!r} needs {what}", source.path, source.line)
    return cls(*columns[1:], source=source)


def lint_filter(filt: Filter, warnings: list[PolicyWarning]) -> None:
    """Append warnings about one rootwrap filter (for ``filters check``)."""
    path, line = filt.source.path, filt.source.line

    def warn(code: str, message: str) -> None:
        warnings.append(PolicyWarning(code, f"{filt.source.name}: {message}", path, line))

    if filt.kind in ("RegExpFilter", "ChainingRegExpFilter"):
        for pattern in filt.args:
            try:  # every form a match uses: oslo's p+'$', privsepd's full match (ASCII too)
                compile_regex(pattern + "$")
                compile_regex(pattern, re.ASCII)
            except PolicyError as exc:
                warn("invalid-regex", f"{exc.reason}; the rule never matches")
                continue
            if _unbalanced(pattern):
                warn(
                    "regex-comma-split",
                    f"pattern {pattern!r} has unbalanced brackets: columns are split on ',' "
                    "so a pattern cannot contain a comma",
                )
    if filt.kind == "ChainingFilter":
        warn("never-matches", "a bare ChainingFilter chains nothing and never matches")
    if filt.kind == "RegExpFilter" and not filt.args:
        warn("never-matches", "a RegExpFilter without patterns never matches")
    if isinstance(filt, EnvFilter):
        for envname in sorted(filt.env_names):
            if dangerous_env_name(envname):
                warn("dangerous-env", f"{envname} is always refused by privsepd")
        if not filt.env_names:
            warn("never-matches", "an EnvFilter without NAME= columns never matches")
    if isinstance(filt, KillFilter) and not os.path.isabs(filt.args[0]):
        warn("kill-relative", f"{filt.args[0]!r} is matched against $PATH at run time")


def _unbalanced(pattern: str) -> bool:
    """True if (), [] or {} do not pair up, escapes aside (a split regexp)."""
    unescaped = re.sub(r"\\.", "", pattern)
    return any(unescaped.count(a) != unescaped.count(b) for a, b in ("()", "[]", "{}"))


def parse_filters(
    text: str, path: str, warnings: list[PolicyWarning] | None = None, lint: bool = False
) -> list[Filter]:
    """Filters of one ``.filters`` text, in oslo's order (``[DEFAULT]`` first).

    Structural problems (duplicates, unknown classes, ...) always go to
    ``warnings``; ``lint=True`` also checks every rule (regexps, env names).
    """
    if warnings is None:
        warnings = []
    ini = _parse_ini(text, path, strict=False)
    for section, option, line in ini.duplicates:
        warnings.append(
            PolicyWarning(
                "duplicate-name",
                f"{option!r} redefined in [{section}]; the last definition wins",
                path,
                line,
            )
        )
    if "Filters" not in ini.sections:
        raise PolicyError("no [Filters] section", path)
    if ini.defaults:
        first = min(o.line for o in ini.defaults.values())
        warnings.append(
            PolicyWarning(
                "default-section", "[DEFAULT] options are loaded as filters too", path, first
            )
        )
    for section in ini.sections:
        if section != "Filters":
            warnings.append(PolicyWarning("ignored-section", f"[{section}] is ignored", path))
    result = []
    append = result.append
    new_source = tuple.__new__  # Source(...) without NamedTuple's Python-level __new__
    classes = FILTER_CLASSES
    strip = str.strip
    for name, (value, line) in ini.items("Filters"):
        columns = list(map(strip, value.split(",")))
        cls = classes.get(columns[0])
        if cls is None or len(columns) <= _MIN_COLUMNS.get(columns[0], 2):
            filt = _build(name, value, Source(path, line, name), warnings)  # error or warning
            if filt is None:
                continue
        else:
            filt = cls(*columns[1:], source=new_source(Source, (path, line, name)))
        if lint:
            lint_filter(filt, warnings)
        append(filt)
    return result


def _dotted_name(name: str) -> bool:
    return 0 < len(name) <= 200 and all(part.isidentifier() for part in name.split("."))


def _normal_abspath(path: str) -> bool:
    return (
        path.startswith("/")
        and os.path.normpath(path) == path
        and not path.startswith("//")
        and "\0" not in path
        and "\n" not in path
    )


class PrivsepHelperFilter(CommandFilter):
    """oslo's implicit ``privsep-helper`` rule, made safe.

    oslo.rootwrap runs ``privsep-helper`` as root with any arguments: any
    importable privsep context starts with the capabilities that its
    caller-chosen config files grant. privsepd (strict) allows only the
    argv oslo.privsep's client builds -- ``[--config-file F]...
    [--config-dir D]... --privsep_context X --privsep_sock_path P`` -- for a
    context X listed in rootwrap.conf's ``privsep_contexts``, config files
    and directories that are root-owned and trusted (they set the helper's
    user and capabilities), and a normalised absolute socket path named
    ``privsep.sock`` (oslo's client's private directory). Deny by default:
    without ``privsep_contexts`` nothing is allowed.
    """

    def __init__(self, contexts: Sequence[str] = (), trust: Trust | None = None) -> None:
        super().__init__("privsep-helper", "root", source=Source("<implicit>", 0, "privsep-helper"))
        self.contexts = frozenset(contexts)
        self.trust = trust

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        miss = super().check(argv, strict)
        if miss is not None or not strict:
            return miss
        problem = self._problem(list(argv[1:]))
        return None if problem is None else Miss("privsep-helper", problem)

    def _problem(self, args: list[str]) -> str | None:
        shape = (
            "arguments must be oslo.privsep's: [--config-file F]... [--config-dir D]... "
            "--privsep_context X --privsep_sock_path P"
        )
        paths: list[tuple[str, str]] = []
        i = 0
        for option in ("--config-file", "--config-dir"):
            while i + 1 < len(args) and args[i] == option:
                paths.append((option, args[i + 1]))
                i += 2
        rest = args[i:]
        if len(rest) != 4 or rest[0] != "--privsep_context" or rest[2] != "--privsep_sock_path":
            return shape
        context, sock = rest[1], rest[3]
        if context not in self.contexts:
            listed = ", ".join(sorted(self.contexts)) or "none"
            return f"context {context!r} is not in rootwrap.conf privsep_contexts ({listed})"
        if not _normal_abspath(sock) or os.path.basename(sock) != "privsep.sock":
            return f"--privsep_sock_path {sock!r} is not a normalised absolute .../privsep.sock"
        for option, path in paths:
            problem = self._untrusted(option, path)
            if problem is not None:
                return problem
        return None

    def _untrusted(self, option: str, path: str) -> str | None:
        if not _normal_abspath(path):
            return f"{option} {path!r} is not a normalised absolute path"
        targets = [path]
        if option == "--config-dir" and os.path.isdir(path):
            targets += [
                os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".conf")
            ]
        for target in targets:
            try:
                _check(target, self.trust)
            except (PolicyError, OSError) as exc:
                return f"{option} {path!r} could hand the helper its capabilities: {exc}"
        return None


def _privsep_helper(contexts: Sequence[str] = (), trust: Trust | None = None) -> Filter:
    return PrivsepHelperFilter(contexts, trust)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many acyclic objects (3x faster loads)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_filters(
    filters_path: Sequence[str],
    trust: Trust | None = None,
    warnings: list[PolicyWarning] | None = None,
    lint: bool = False,
    privsep_contexts: Sequence[str] = (),
) -> list[Filter]:
    """All filters of every directory, in order, plus oslo's implicit privsep-helper.

    Files are read in sorted name order (oslo: arbitrary listdir order);
    dot-files and non-files are skipped, as in oslo. ``lint=True`` adds the
    per-rule and rule-order warnings a linter wants (slower). The
    privsep-helper rule allows only ``privsep_contexts``
    (:class:`PrivsepHelperFilter`).
    """
    if warnings is None:
        warnings = []
    with _no_gc():
        return _load_filters(filters_path, trust, warnings, lint, privsep_contexts)


def _load_filters(
    filters_path: Sequence[str],
    trust: Trust | None,
    warnings: list[PolicyWarning],
    lint: bool,
    privsep_contexts: Sequence[str] = (),
) -> list[Filter]:
    result: list[Filter] = []
    for directory in filters_path:
        if not os.path.isdir(directory):
            warnings.append(
                PolicyWarning("missing-dir", "filters directory does not exist", directory)
            )
            continue
        _check(directory, trust)
        for name in sorted(os.listdir(directory)):
            if name.startswith("."):
                continue
            full = os.path.join(directory, name)
            if not os.path.isfile(full):
                continue
            if not name.endswith(".filters"):
                warnings.append(
                    PolicyWarning("odd-suffix", "loaded although it does not end in .filters", full)
                )
            result.extend(parse_filters(_read(full, trust), full, warnings, lint))
    if lint:
        _order_warnings(result, warnings)
    result.append(_privsep_helper(privsep_contexts, trust))
    if privsep_contexts:
        warnings.append(
            PolicyWarning(
                "implicit-privsep-helper",
                "privsep-helper is allowed as root for privsep_contexts "
                f"{', '.join(privsep_contexts)} (oslo.privsep's argument shapes only)",
                "<implicit>",
            )
        )
    return result


def _order_warnings(filters: list[Filter], warnings: list[PolicyWarning]) -> None:
    """Flag commands allowed by rules in several files: oslo's winner was arbitrary."""
    by_key: dict[str, set[str]] = {}
    for filt in filters:
        for key in filt.index_keys() or ():
            by_key.setdefault(key, set()).add(filt.source.path)
    for key, paths in sorted(by_key.items()):
        if len(paths) > 1:
            warnings.append(
                PolicyWarning(
                    "order-dependent",
                    f"{key!r} is matched by rules in {sorted(paths)}; oslo's choice "
                    "depended on directory order, privsepd uses sorted file names",
                    sorted(paths)[0],
                )
            )


@dataclass
class RootwrapPolicy:
    """A loaded rootwrap policy: config, filters in order, index, warnings."""

    config: RootwrapConfig
    filters: list[Filter]
    index: FilterIndex
    warnings: list[PolicyWarning] = field(default_factory=list)

    def match(self, argv: Sequence[str]) -> Decision:
        return self.index.match(argv)


def load_policy(conf_path: str, trust: Trust | None = None, lint: bool = False) -> RootwrapPolicy:
    """Load rootwrap.conf and every filters directory it names."""
    config = load_config(conf_path, trust)
    warnings = list(config.warnings)
    filters = load_filters(config.filters_path, trust, warnings, lint, config.privsep_contexts)
    return RootwrapPolicy(config, filters, FilterIndex(filters, config.exec_dirs), warnings)


def signal_exit_code(returncode: int) -> int:
    """oslo-rootwrap's exit code for a child's returncode (128+N when killed by N)."""
    return SIGNAL_BASE - returncode if returncode < 0 else returncode
