"""Command filters with oslo.rootwrap's semantics, and the decision model.

Model (shared by the rootwrap INI loader and the native TOML policy)
--------------------------------------------------------------------
A command policy is an ordered sequence of :class:`Filter` objects. Order
matters: the first filter that matches *and* whose executable exists wins,
exactly like oslo.rootwrap's ``match_filter``. A filter knows:

* ``kind``       the rootwrap class name (``"CommandFilter"``, ...); native
                 filters may use their own kind string;
* ``source``     a :class:`Source` (file, line, rule name) for audit/explain;
* ``exec_path``  what to execute (absolute, or a bare name searched in the
                 policy's ``exec_dirs``); ``run_as`` the user to run as;
* ``args``       the rootwrap columns after ``run_as`` (meaning per class).

and answers four questions, each a pure function of the argv it is given
(argv is never modified):

* ``check(argv, strict=True) -> Miss | None`` does this filter accept argv?
  ``None`` means yes; a :class:`Miss` says why not (a short ``code`` and a
  human ``detail``). With ``strict=False`` the answer is oslo.rootwrap's;
  with ``strict=True`` (what privsepd enforces) a filter first computes
  oslo's answer and only then applies privsepd's extra checks, so privsepd
  never accepts what oslo refuses. A refusal that oslo would have accepted
  carries a code from :data:`DEVIATIONS` (see ``docs/deviations.md``).
* ``resolve(exec_dirs) -> str | None`` the executable that would run, or
  ``None`` if it does not exist ("matched but not executable").
* ``command(argv, executable) -> list[str]`` the final argv to execute.
* ``environment(argv) -> dict[str, str]`` variables to *add* to the
  (sanitized) environment; empty for everything but EnvFilter.

Chaining filters (``chaining = True``) also have ``chained(argv)``: the
command they will run, which must itself be accepted by a non-chaining
filter with the same ``run_as`` (the index does that recursion).
``index_keys()`` tells the :class:`~privsepd.policy.index.FilterIndex` which
``argv[0]`` values a filter can possibly accept (``None``: cannot tell).

A match produces a :class:`Decision` (re-exported here from
:mod:`privsepd.policy.decision`): allowed or not, the outcome (``allow``, ``no-match``,
``not-executable``, ``bad-user``), the matched filter, resolved executable,
final command, run-as user/uid/gid, environment additions, oslo-compatible
message and exit code, and a trace of every candidate examined with its
:class:`Miss`.
"""

from __future__ import annotations

import os
import pwd
import stat

from privsepd._record import record
from privsepd.errors import PolicyError
from privsepd.policy.decision import RC_NOEXECFOUND as RC_NOEXECFOUND
from privsepd.policy.decision import RC_UNAUTHORIZED as RC_UNAUTHORIZED
from privsepd.policy.decision import Candidate, Decision

try:
    from _thread import _local as _thread_local  # what threading.local is
except ImportError:  # pragma: no cover -- an interpreter without it
    from threading import local as _thread_local

# privsepd-rootwrap imports this module on every run: no typing, dataclasses,
# threading or shutil at load time (together ~15 ms of its start-up), and re
# (with enum, ~7 ms) only once a rule with a pattern is examined. The type
# checker treats this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NamedTuple

__all__ = [
    "DEVIATIONS",
    "Candidate",
    "ChainingFilter",
    "ChainingRegExpFilter",
    "CommandFilter",
    "Decision",
    "EnvFilter",
    "FILTER_CLASSES",
    "Filter",
    "IpFilter",
    "IpNetnsExecFilter",
    "KillFilter",
    "Miss",
    "PathFilter",
    "ReadFileFilter",
    "RegExpFilter",
    "Source",
    "dangerous_env_name",
]

NETNS_WORDS = ("net", "netn", "netns")
EXEC_WORDS = ("e", "ex", "exe", "exec")

# Exit codes of oslo-rootwrap (oslo_rootwrap/cmd.py), reused by the CLI shim.
RC_NOCOMMAND = 98
RC_BADCONFIG = 97
SIGNAL_BASE = 128

# Miss codes for refusals oslo.rootwrap would have accepted (security fixes).
DEVIATIONS = frozenset(
    {
        "regex-anchor",  # oslo's pattern+'$' admits a trailing newline, escapes via '|', ...
        "regex-unicode",  # \d admits '١٢٣' and '１２', \w any letter, \s any space
        "path-prefix",  # oslo's string prefix: base /data admits /data2
        "path-unresolved",  # realpath left '..' or a symlink in the path (loop)
        "chain-path",  # chained command given as a path; oslo checks its basename only
        "ip-batch",  # ip -batch FILE runs any ip command, including netns exec
        "ip-netns-exec",  # netns exec hidden from oslo (case, option value, ...)
        "env-empty-value",  # NAME= is skipped by oslo, leaking the parent's NAME
        "env-dangerous",  # LD_PRELOAD & co. reach a root process
        "env-argv-mutation",  # oslo's EnvFilter pops 'env' from the shared argv
        "kill-pid-syntax",  # pid that int() accepts but kill(1) may read differently
        "kill-deleted-exe",  # target runs a deleted/replaced executable
        "kill-untrusted-dir",  # bare-name target found via a caller-writable $PATH dir
        "bad-user",  # run_as user does not exist (oslo crashes in preexec)
        "privsep-helper",  # context not in privsep_contexts, or not oslo.privsep's argv shape
    }
)

#: ``run_as`` of a native rule that names none: whoever runs it (see NativeCommand).
RUN_AS_HELPER = "<helper>"

# Variables that change how a root process loads code or resolves names.
_DANGEROUS_ENV = frozenset(
    {
        "BASH_ENV",
        "BASHOPTS",
        "ENV",
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "IFS",
        "LOCALDOMAIN",
        "LOCPATH",
        "NIS_PATH",
        "NLSPATH",
        "NODE_OPTIONS",
        "PATH",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "PS4",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "RUBYLIB",
        "RUBYOPT",
        "SHELLOPTS",
        "TMPDIR",
        "TZDIR",
    }
)
_DANGEROUS_ENV_PREFIXES = ("LD_", "MALLOC_", "PYTHON", "BASH_FUNC_")


def dangerous_env_name(name: str) -> bool:
    """True for variables that let the caller inject code into a root process."""
    upper = name.upper()
    return upper in _DANGEROUS_ENV or upper.startswith(_DANGEROUS_ENV_PREFIXES)


if TYPE_CHECKING:

    class _SourceFields(NamedTuple):
        path: str
        line: int
        name: str

    class _MissFields(NamedTuple):
        code: str
        detail: str

else:
    _SourceFields = record("Source", ("path", "line", "name"))
    _MissFields = record("Miss", ("code", "detail"))


class Source(_SourceFields):
    """Where a filter was defined: file, 1-based line, rule name."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.name})"


BUILTIN = Source("<builtin>", 0, "")


class Miss(_MissFields):
    """Why a filter did not accept an argv: a stable ``code`` and a detail."""

    __slots__ = ()

    @property
    def deviation(self) -> bool:
        """True when oslo.rootwrap would have accepted (privsepd's fix)."""
        return self.code in DEVIATIONS

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def _realpath(path: str) -> str:
    """os.path.realpath, '' when the cwd is gone (as oslo does) or a racing swap
    makes realpath's own readlink fail (EINVAL): no path, no match."""
    try:
        return os.path.realpath(path)
    except OSError:
        return ""


def _still_unresolved(real: str) -> bool:
    """True if a realpath result still holds '..'/'.' or an existing symlink.

    realpath gives up on symlink loops and returns the rest unresolved; the
    kernel resolves it later, after the check, possibly somewhere else.
    """
    if not real.startswith("/"):
        return True
    parts = real.split("/")
    if any(p in ("..", ".") for p in parts):
        return True
    prefix = ""
    for part in parts[1:]:
        if not part:
            continue
        prefix += "/" + part
        try:
            st = os.lstat(prefix)
        except OSError:
            return False  # the rest does not exist: nothing left to resolve
        if stat.S_ISLNK(st.st_mode):
            return True
    return False


class Filter:
    """Base of every filter; CommandFilter semantics: argv[0] names the command."""

    kind = "Filter"
    chaining = False
    _resolved: str | None = None  # cached executable, set on first success
    _user: tuple[int, int] | None = None  # cached (uid, gid), set on first success

    def __init__(
        self,
        exec_path: str,
        run_as: str,
        *args: str,
        source: Source = BUILTIN,
    ) -> None:
        self.exec_path = exec_path
        self.run_as = run_as
        self.args: tuple[str, ...] = args
        self.source = source

    @property
    def name(self) -> str:
        return self.source.name

    def __repr__(self) -> str:
        cols = ", ".join([self.exec_path, self.run_as, *self.args])
        where = f"{self.source.path}:{self.source.line}"
        return f"<{self.kind} {self.source.name or '?'}: {cols} @ {where}>"

    # -- matching -----------------------------------------------------------
    def index_keys(self) -> tuple[str, ...] | None:
        """argv[0] values this filter can accept; None if it cannot tell."""
        path = self.exec_path
        base = path[path.rfind("/") + 1 :]  # os.path.basename
        return (path,) if base == path else (path, base)

    def _command_matches(self, argv0: str) -> bool:
        return argv0 == self.exec_path or argv0 == os.path.basename(self.exec_path)

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv:
            return Miss("command", "empty command")
        if not self._command_matches(argv[0]):
            return Miss("command", f"{argv[0]!r} is not {self.exec_path!r}")
        return None

    # -- execution ----------------------------------------------------------
    def resolve(self, exec_dirs: Sequence[str]) -> str | None:
        """Executable path (absolute as given, else first exec_dirs hit).

        Like oslo, a hit is cached for the life of the filter and a miss is
        retried on the next call.
        """
        if self._resolved is not None:
            return self._resolved
        if os.path.isabs(self.exec_path):
            if os.access(self.exec_path, os.X_OK):
                self._resolved = self.exec_path
        else:
            for directory in exec_dirs:
                candidate = os.path.join(directory, self.exec_path)
                if os.access(candidate, os.X_OK):
                    self._resolved = candidate
                    break
        return self._resolved

    def command(self, argv: Sequence[str], executable: str) -> list[str]:
        return [executable, *argv[1:]]

    def environment(self, argv: Sequence[str]) -> dict[str, str]:
        return {}

    def chained(self, argv: Sequence[str]) -> list[str]:
        return []

    def user(self) -> tuple[int, int] | None:
        """(uid, gid) of run_as, or None if no such user; cached on success."""
        if self._user is None:
            try:
                pw = pwd.getpwnam(self.run_as)
            except (KeyError, ValueError):
                return None
            self._user = (pw.pw_uid, pw.pw_gid)
        return self._user


class CommandFilter(Filter):
    """Any arguments; argv[0] must be exec_path or its basename."""

    kind = "CommandFilter"


#: Characters with a meaning in a pattern: one without any is its own literal.
_REGEX_META = frozenset("\\.^$*+?{}[]|()")


def _regex_args(filt: Filter, argv: Sequence[str], strict: bool) -> Miss | None:
    import re  # here, not at module load: see TYPE_CHECKING above

    from privsepd.regex import compile_regex

    where = f"{filt.source.path}:{filt.source.line}: {filt.source.name}"
    for i, (pattern, arg) in enumerate(zip(filt.args, argv)):
        code = "invalid-regex"
        try:  # as in oslo, a pattern that does not compile denies; here the Miss says why
            if compile_regex(pattern + "$").match(arg) is None:  # oslo's rule
                return Miss("argument", f"argument {i} {arg!r} does not match {pattern!r}")
            code = "regex-anchor"  # only oslo's '$' made it compile (a trailing '\\')
            if strict and compile_regex(pattern).fullmatch(arg) is None:
                return Miss(
                    "regex-anchor",
                    f"argument {i} {arg!r} matches {pattern!r}+'$' only through oslo's "
                    "loose anchoring (trailing newline, top-level '|', inline flags)",
                )
            code = "regex-unicode"  # (?u) under re.ASCII: strict mode has no Unicode classes
            if strict and compile_regex(pattern, re.ASCII).fullmatch(arg) is None:
                return Miss(
                    "regex-unicode",
                    f"argument {i} {arg!r} matches {pattern!r} only with Unicode classes "
                    "(\\d, \\w, \\s admit non-ASCII digits, letters, spaces)",
                )
        except PolicyError as exc:
            return Miss(code, f"{where} argument {i}: {exc.reason}")
    return None


def _literal_keys(pattern: str) -> tuple[str, ...] | None:
    if not _REGEX_META.isdisjoint(pattern):
        return None
    return (pattern,)


class RegExpFilter(Filter):
    """Every argv element (argv[0] too) must match the pattern at its position."""

    kind = "RegExpFilter"

    def index_keys(self) -> tuple[str, ...] | None:
        if not self.args:
            return ()  # never matches a non-empty argv
        return _literal_keys(self.args[0])

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv:
            return Miss("command", "empty command")
        if len(self.args) != len(argv):
            return Miss("arity", f"{len(argv)} words, filter needs {len(self.args)}")
        return _regex_args(self, argv, strict)


class PathFilter(Filter):
    """Per-argument constraints: 'pass', an exact string, or an absolute base dir.

    Path arguments are replaced by their realpath in the executed command,
    and the executor pins them (``path_arguments``, :mod:`privsepd.paths`).
    """

    kind = "PathFilter"

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv or len(argv) < 2:
            return Miss("arity", "PathFilter needs at least one argument")
        values = argv[1:]
        if len(self.args) != len(values):
            return Miss("arity", f"{len(values)} arguments, filter needs {len(self.args)}")
        miss = super().check(argv, strict)
        if miss:
            return miss
        reals: list[tuple[int, str, str]] = []
        _checked_paths.last = None
        for i, (constraint, value) in enumerate(zip(self.args, values), 1):
            if not os.path.isabs(constraint):
                if constraint != "pass" and constraint != value:
                    return Miss("argument", f"argument {i} {value!r} is not {constraint!r}")
                continue
            real = _realpath(value)
            if os.path.commonprefix([constraint, real]) != constraint:
                return Miss("argument", f"argument {i} {real!r} is not under {constraint!r}")
            reals.append((i, constraint, real))
        if not strict:
            return None
        for i, constraint, real in reals:
            if not (
                real == constraint
                or constraint.endswith("/")
                or real[len(constraint) : len(constraint) + 1] == "/"
            ):
                return Miss(
                    "path-prefix",
                    f"argument {i} {real!r} only shares the string prefix {constraint!r}",
                )
            if _still_unresolved(real):
                return Miss(
                    "path-unresolved",
                    f"argument {i} {real!r} still contains '..' or a symlink after "
                    "resolution (symlink loop?)",
                )
        # The command gets exactly the paths judged here, not a second
        # resolution that a symlink swap in between could redirect.
        _checked_paths.last = (self, tuple(argv), {i: real for i, _, real in reals})
        return None

    def path_arguments(self, argv: Sequence[str]) -> dict[int, tuple[str, bool]]:
        """argv positions with a base directory: (base, must_exist), for pinning."""
        return {
            i: (c.rstrip("/") or "/", False)
            for i, c in enumerate(self.args, 1)
            if os.path.isabs(c) and i < len(argv)
        }

    def command(self, argv: Sequence[str], executable: str) -> list[str]:
        last = getattr(_checked_paths, "last", None)
        judged = last[2] if last is not None and last[0] is self and last[1] == tuple(argv) else {}
        args = [
            judged.get(i) or _realpath(value) if os.path.isabs(constraint) else value
            for i, (constraint, value) in enumerate(zip(self.args, argv[1:]), 1)
        ]
        return [executable, *args]


# Per thread: the paths the last PathFilter.check resolved (helpers decide on
# several threads at once).
_checked_paths = _thread_local()


def _plain_decimal(text: str) -> bool:
    """Only ASCII digits, at least one: no sign, space, underscore or other script's digit."""
    return text.isascii() and text.isdigit()


class KillFilter(Filter):
    """``kill [SIGNAL] PID`` of a process running a given executable.

    Columns: run_as, executable (absolute, or a name whose directory must be
    in $PATH), then the accepted signals (none listed: no signal allowed).
    """

    kind = "KillFilter"

    def __init__(self, run_as: str, *args: str, source: Source = BUILTIN) -> None:
        super().__init__("/bin/kill", run_as, *args, source=source)

    def index_keys(self) -> tuple[str, ...] | None:
        return ("kill",)

    @staticmethod
    def _oslo_program(pid: int) -> str | None:
        """oslo's idea of the executable of pid (with its deleted-exe fallback)."""
        try:
            command = os.readlink(f"/proc/{pid}/exe")
        except (ValueError, OSError):
            return None
        command = command.partition("\0")[0]
        if command.endswith(" (deleted)"):
            command = command[: -len(" (deleted)")]
        if os.path.isfile(command):
            return command
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                cmdline = f.read().partition("\0")[0]
        except OSError:
            return None
        import shutil

        cmdline = shutil.which(cmdline) or cmdline
        if os.path.isfile(cmdline):
            command = cmdline
        return command

    @staticmethod
    def _exact_program(pid: int) -> str | None:
        """The executable only if /proc says it is still that file, unreplaced."""
        try:
            command = os.readlink(f"/proc/{pid}/exe")
        except (ValueError, OSError):
            return None
        if "\0" in command or command.endswith(" (deleted)") or not os.path.isfile(command):
            return None
        return command

    def _program_ok(self, command: str) -> bool:
        wanted = self.args[0]
        if os.path.isabs(wanted):
            return wanted == command
        return (
            os.path.isabs(command)
            and wanted == os.path.basename(command)
            and os.path.dirname(command) in os.environ.get("PATH", "").split(":")
        )

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv or argv[0] != "kill":
            return Miss("command", "not a kill command")
        if len(argv) == 3:
            if argv[1] not in self.args[1:]:
                return Miss("signal", f"signal {argv[1]!r} not in {list(self.args[1:])}")
        elif len(argv) != 2:
            return Miss("arity", "expected kill [SIGNAL] PID")
        elif len(self.args) > 1:
            return Miss("signal", f"a signal from {list(self.args[1:])} is required")
        pid_text = argv[-1]
        try:
            pid = int(pid_text)
        except ValueError:
            return Miss("pid", f"{pid_text!r} is not a pid")
        command = self._oslo_program(pid)
        if not command:
            return Miss("process", f"no process {pid}")
        if not self._program_ok(command):
            return Miss("process", f"process {pid} runs {command!r}, not {self.args[0]!r}")
        if not strict:
            return None
        if not _plain_decimal(pid_text):
            return Miss("kill-pid-syntax", f"{pid_text!r} is not a plain decimal pid")
        exact = self._exact_program(pid)
        if exact is None or not self._program_ok(exact):
            return Miss(
                "kill-deleted-exe",
                f"process {pid} runs a deleted or replaced executable; its identity "
                "cannot be established",
            )
        if not os.path.isabs(self.args[0]) and not _trusted_dir(os.path.dirname(exact)):
            # oslo accepts any $PATH directory, and $PATH is the caller's:
            # it could name a directory holding a victim's binary.
            return Miss(
                "kill-untrusted-dir",
                f"process {pid} runs {exact!r} from a directory that is not root-owned "
                "and protected; name the executable by absolute path",
            )
        return None


def _trusted_dir(directory: str) -> bool:
    from privsepd.errors import PolicyError
    from privsepd.policy.trust import check_trusted

    try:
        check_trusted(directory)
    except (PolicyError, OSError):
        return False
    return True


class ReadFileFilter(Filter):
    """Exactly ``cat FILE``; runs /bin/cat as root."""

    kind = "ReadFileFilter"

    def __init__(self, file_path: str, *args: str, source: Source = BUILTIN) -> None:
        self.file_path = file_path
        super().__init__("/bin/cat", "root", *args, source=source)

    def index_keys(self) -> tuple[str, ...] | None:
        return ("cat",)

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if list(argv) != ["cat", self.file_path]:
            return Miss("argument", f"only 'cat {self.file_path}' is allowed")
        return None


def _is_batch_option(arg: str) -> bool:
    if arg.startswith("--"):
        arg = arg[1:]
    return len(arg) >= 2 and "-batch".startswith(arg)


class IpFilter(Filter):
    """``ip`` with anything but ``netns exec``."""

    kind = "IpFilter"

    def index_keys(self) -> tuple[str, ...] | None:
        return ("ip",)

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv or argv[0] != "ip":
            return Miss("command", "not an ip command")
        for a, b in zip(argv[1:], argv[2:]):
            if a in NETNS_WORDS:
                if b in EXEC_WORDS:
                    return Miss("netns-exec", "ip netns exec needs IpNetnsExecFilter")
                break
        if not strict:
            return None
        for a, b in zip(argv[1:], argv[2:]):
            if a.lower() in NETNS_WORDS and b.lower() in EXEC_WORDS:
                return Miss("ip-netns-exec", f"'{a} {b}' would run any command in a namespace")
        for a in argv[1:]:
            if _is_batch_option(a):
                return Miss("ip-batch", f"{a!r} reads commands (netns exec too) from a file")
        return None


class EnvFilter(Filter):
    """``[env] NAME=VALUE... command args...`` with exactly the listed NAMEs.

    Columns: exec_path (if it contains 'env', the command is the first
    column after the NAME= columns), run_as, NAME= columns, command.
    """

    kind = "EnvFilter"

    def __init__(self, exec_path: str, run_as: str, *args: str, source: Source = BUILTIN) -> None:
        super().__init__(exec_path, run_as, *args, source=source)
        self.env_names = _env_names(self.args)
        if "env" in exec_path and len(self.env_names) < len(self.args):
            self.exec_path = self.args[len(self.env_names)]

    def index_keys(self) -> tuple[str, ...] | None:
        return ()  # indexed by the command after the assignments, see env_keys

    def env_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.exec_path, os.path.basename(self.exec_path))))

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv:
            return Miss("command", "empty command")
        view = env_view(argv)
        if len(view) < len(self.args):
            return Miss("arity", f"needs at least {len(self.args)} words after 'env'")
        user_envs = _env_names(view)
        command = view[len(user_envs) : len(user_envs) + 1]
        if not (command and self._command_matches(command[0])):
            return Miss("command", f"command after the assignments is not {self.exec_path!r}")
        if not self.env_names or user_envs != self.env_names:
            return Miss(
                "env-names",
                f"sets {sorted(user_envs)}, filter requires {sorted(self.env_names)}",
            )
        if not strict:
            return None
        for arg in view:
            name, eq, value = arg.partition("=")
            if not eq:
                break
            if dangerous_env_name(name):
                return Miss("env-dangerous", f"{name} would reach a root process")
            if not value:
                return Miss("env-empty-value", f"{name}= is empty; oslo leaks the parent's {name}")
        return None

    def command(self, argv: Sequence[str], executable: str) -> list[str]:
        view = list(env_view(argv))
        while view and "=" in view[0]:
            view.pop(0)
        return [executable, *view[1:]]

    def environment(self, argv: Sequence[str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for arg in env_view(argv):
            name, eq, value = arg.partition("=")
            if not eq:
                break
            if name and value:
                env[name] = value
        return env


def env_view(argv: Sequence[str]) -> Sequence[str]:
    """argv as an EnvFilter sees it: one leading 'env' dropped."""
    return argv[1:] if argv and argv[0] == "env" else argv


def _env_names(args: Sequence[str]) -> set[str]:
    names = set()
    for arg in args:
        if "=" not in arg:
            break
        names.add(arg.partition("=")[0])
    return names


class ChainingFilter(Filter):
    """A command that runs another command, which must be allowed by itself.

    The bare class chains nothing, so (as in oslo) it never allows anything.
    """

    kind = "ChainingFilter"
    chaining = True

    def chained(self, argv: Sequence[str]) -> list[str]:
        return []


class IpNetnsExecFilter(ChainingFilter):
    """``ip netns exec NS command...`` (run_as root only)."""

    kind = "IpNetnsExecFilter"

    def index_keys(self) -> tuple[str, ...] | None:
        return ("ip",)

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if self.run_as != "root":
            return Miss("run-as", "ip netns exec filters must run as root")
        if not argv or len(argv) < 4:
            return Miss("arity", "expected ip netns exec NS COMMAND...")
        if not (argv[0] == "ip" and argv[1] in NETNS_WORDS and argv[2] in EXEC_WORDS):
            return Miss("command", "not ip netns exec")
        return None

    def chained(self, argv: Sequence[str]) -> list[str]:
        return list(argv[4:])


class ChainingRegExpFilter(ChainingFilter):
    """Leading words matched by regexps; the rest must be an allowed command."""

    kind = "ChainingRegExpFilter"

    def index_keys(self) -> tuple[str, ...] | None:
        if not self.args:
            return None
        return _literal_keys(self.args[0])

    def check(self, argv: Sequence[str], strict: bool = True) -> Miss | None:
        if not argv:
            return Miss("command", "empty command")
        if len(self.args) > len(argv):
            return Miss("arity", f"{len(argv)} words, filter needs at least {len(self.args)}")
        return _regex_args(self, argv, strict)

    def chained(self, argv: Sequence[str]) -> list[str]:
        return list(argv[len(self.args) :])


FILTER_CLASSES: dict[str, type[Filter]] = {
    cls.kind: cls
    for cls in (
        CommandFilter,
        RegExpFilter,
        PathFilter,
        KillFilter,
        ReadFileFilter,
        IpFilter,
        EnvFilter,
        ChainingFilter,
        IpNetnsExecFilter,
        ChainingRegExpFilter,
    )
}
