"""What every ``privsepd filters check`` module shares (imports no other check module).

The finding and report types, the lint-rule and severity tables, the default
and world-writable directories, and :class:`CheckState`: the settings and
findings of one check run, which the rule modules (:mod:`.check_rootwrap`,
:mod:`.check_native`, :mod:`.check_trust`) add to and the driver
(:class:`privsepd.authoring.check.Checker`) extends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privsepd.errors import PolicyError
    from privsepd.policy.filters import Filter

__all__ = [
    "DEFAULT_EXEC_DIRS",
    "LINT_RULES",
    "SEVERITIES",
    "WORLD_WRITABLE",
    "CheckState",
    "Finding",
    "Report",
    "downgrade",
    "is_root",
    "under_world_writable",
]

SEVERITIES = ("info", "warning", "error")
DEFAULT_EXEC_DIRS = (
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
)
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")

# code -> one line: what the lint rule looks for (listed by --list-rules and docs).
LINT_RULES: dict[str, str] = {
    "unrestricted-program": "any arguments to a program that can write files, run programs, "
    "read any file, change permissions, mount, load kernel code or signal any process",
    "shell-command": "a shell or interpreter allowed to run a script given on the command line",
    "wildcard-path": "an argument pattern or PathFilter base that admits any path (/etc/shadow)",
    "path-traversal": "an argument pattern that admits '..' after its directory prefix",
    "world-writable-path": "a path argument, base, file or executable under /tmp, /var/tmp, "
    "/dev/shm (symlink planting)",
    "user-writable-path": "a path_under or PathFilter base that a non-root user can write "
    "(in it or below it): paths are pinned at run time, new names there are refused",
    "command-filter-args": "arguments written on a CommandFilter, which ignores them",
    "chaining": "a rule that runs another allowed command (ip netns exec, nice, ...)",
    "env-unchecked": "EnvFilter variables whose values are never checked",
    "dangerous-env": "an EnvFilter variable that injects code (LD_PRELOAD, PYTHONPATH, ...)",
    "duplicate-name": "a rule name defined twice (the earlier rule silently disappears)",
    "shadowed": "a rule that can never win because an earlier rule accepts all it accepts",
    "never-matches": "a rule that can never match (bare ChainingFilter, bad regex, ...)",
    "missing-executable": "an executable that does not exist in exec_dirs",
    "untrusted-executable": "an executable or exec_dir that a non-root user can replace",
    "unsafe-ownership": "a policy file or directory not owned by root or writable by others",
    "loose-regex": "a pattern oslo.rootwrap reads more loosely than privsepd (top-level '|')",
    "path-prefix": "a PathFilter base without a trailing '/' (oslo: /data admits /data2)",
    "kill-signal": "a KillFilter signal that is not an option (kill 9 PID kills pid 9 too)",
    "kill-shared-executable": "a KillFilter on an interpreter many services run",
    "sensitive-read": "a ReadFileFilter on a secret (shadow, keys, sudoers)",
    "ip-filter": "IpFilter: any ip command but netns exec / -batch",
    "capability": "a native command or context holding a capability close to full root",
    "load-warning": "what the loader reports: odd suffix, untrimmed entry, comma-split "
    "regex, unknown class, [DEFAULT] rules, ignored section, ...",
    "parse-error": "a file that cannot be read or parsed (the runtime refuses it)",
}


@dataclass(frozen=True)
class Finding:
    """One lint result: where, which rule, how bad, and what to do about it."""

    path: str
    line: int | None
    rule: str  # the policy rule's name ('' for file-level findings)
    code: str  # the lint rule (a key of LINT_RULES)
    severity: str  # info | warning | error
    problem: str
    attack: str = ""
    fix: str = ""

    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def to_json(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        name = f" rule {self.rule!r}:" if self.rule else ""
        out = [f"{self.where()}: {self.severity}: [{self.code}]{name} {self.problem}"]
        if self.attack:
            out.append(f"    attack: {self.attack}")
        if self.fix:
            out.append(f"    fix: {self.fix}")
        return "\n".join(out)


@dataclass
class Report:
    """All findings of one ``check`` run, plus whether some input was unusable."""

    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    unusable: bool = False

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for f in self.findings:
            counts[f.severity] += 1
        return counts

    @property
    def exit_code(self) -> int:
        """0 clean, 1 error findings, 2 unusable input."""
        if self.unusable:
            return 2
        return 1 if any(f.severity == "error" for f in self.findings) else 0


def is_root(user: str) -> bool:
    return user in ("root", "0")


def downgrade(severity: str, user: str) -> str:
    """A rule running as an unprivileged user is one notch less severe."""
    if is_root(user):
        return severity
    return SEVERITIES[max(SEVERITIES.index(severity) - 1, 0)]


def under_world_writable(path: str) -> bool:
    norm = os.path.normpath(path)
    return any(norm == d or norm.startswith(d + "/") for d in WORLD_WRITABLE)


class CheckState:
    """One check run as the rule modules see it: settings, rules loaded, findings so far."""

    def __init__(self, exec_dirs: Sequence[str] | None, ownership: bool) -> None:
        self.exec_dirs = tuple(exec_dirs) if exec_dirs is not None else None
        self.ownership = ownership
        self.report = Report()
        self.filters: list[Filter] = []
        self.owned_checked: set[str] = set()  # paths whose ownership was already checked
        self.contexts: dict = {}  # native [context.NAME] specs seen so far, by name

    # -- output helpers -------------------------------------------------------------
    def add(
        self,
        path: str,
        line: int | None,
        rule: str,
        code: str,
        severity: str,
        problem: str,
        attack: str = "",
        fix: str = "",
    ) -> None:
        self.report.findings.append(
            Finding(path, line or None, rule, code, severity, problem, attack, fix)
        )

    def on(self, filt: Filter, code: str, severity: str, problem: str, attack="", fix="") -> None:
        src = filt.source
        self.add(src.path, src.line, src.name, code, severity, problem, attack, fix)

    # -- inputs ----------------------------------------------------------------------
    def read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            self.add(path, None, "", "parse-error", "error", f"cannot read: {reason}")
            self.report.unusable = True
            return None

    def parse_error(self, exc: PolicyError, path: str) -> None:
        self.add(
            exc.path or path,
            exc.line,
            "",
            "parse-error",
            "error",
            exc.reason,
            "",
            "fix the file: privsepd refuses to load it (and oslo.rootwrap crashes or skips it)",
        )
        self.report.unusable = True
