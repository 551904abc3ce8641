"""Lint rules for rootwrap INI policy: ``rootwrap.conf`` and ``.filters`` files.

Reads a rootwrap.conf (its loader warnings, exec_dirs) and .filters files
(their loader warnings), and judges each rootwrap filter class by what a
compromised service could do with it: free arguments to a dangerous program,
argument patterns that admit any path, ``..`` or /tmp, shells with ``-c``,
unchecked environment variables, loose PathFilter bases, KillFilter signals.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from privsepd.authoring.check_base import CheckState, downgrade, is_root, under_world_writable
from privsepd.authoring.check_programs import (
    CATEGORIES,
    INTERPRETERS,
    PATH_CATEGORIES,
    SCRIPT_FLAGS,
    SHELLS,
    program_info,
)
from privsepd.authoring.check_regex import (
    admits,
    admits_injection,
    literal_prefix,
    probe_path,
    top_level_branch,
)
from privsepd.authoring.check_trust import check_exec_dir, user_writable_base
from privsepd.errors import PolicyError
from privsepd.policy.filters import EnvFilter, Filter, dangerous_env_name
from privsepd.policy.rootwrap import PolicyWarning, lint_filter, parse_config, parse_filters
from privsepd.regex import exponential_reason

__all__ = ["add_config", "add_filters", "lint_rule", "load_warning"]

# loader warning code -> (lint code, severity, attack, fix)
_LOAD_WARNINGS: dict[str, tuple[str, str, str, str]] = {
    "duplicate-name": (
        "duplicate-name",
        "warning",
        "the earlier rule is silently dropped: the policy is not what it reads like",
        "give every rule a unique name",
    ),
    "regex-comma-split": (
        "load-warning",
        "error",
        "columns are split on ',', so the pattern was cut in two: one argument is checked "
        "against a broken pattern and a column is added (the rule changes meaning)",
        "rewrite the pattern without ',' (e.g. [0-9]{1,3} instead of a {m,n} with a comma: "
        "use alternatives or a native TOML rule)",
    ),
    "invalid-regex": (
        "never-matches",
        "warning",
        "",
        "fix the pattern; as written the rule never matches",
    ),
    "never-matches": ("never-matches", "warning", "", "remove the rule or complete it"),
    "unknown-class": (
        "load-warning",
        "warning",
        "the rule is skipped: whatever it was meant to allow is denied",
        "use one of the rootwrap filter classes",
    ),
    "odd-suffix": (
        "load-warning",
        "warning",
        "editor backups (x.filters~, x.filters.orig) in the directory are loaded as policy, "
        "so an old, wider rule stays active",
        "keep only *.filters files in filters directories",
    ),
    "untrimmed-entry": (
        "load-warning",
        "warning",
        "the entry is used verbatim with its whitespace: the directory is not the one meant",
        "remove the spaces around ',' in the list",
    ),
    "relative-entry": (
        "load-warning",
        "warning",
        "oslo.rootwrap resolves it against the caller's current directory, which the "
        "caller chooses (privsepd ignores it)",
        "use absolute paths only",
    ),
    "default-section": (
        "load-warning",
        "warning",
        "rules in [DEFAULT] are loaded as filters too, and leak into every section",
        "move them to [Filters]",
    ),
    "ignored-section": ("load-warning", "info", "", "remove the section or rename it [Filters]"),
    "missing-dir": ("load-warning", "warning", "", "create the directory or drop it"),
    "dangerous-env": (
        "dangerous-env",
        "error",
        "under oslo.rootwrap the caller sets it for a root process and injects code "
        "(privsepd refuses the variable at run time)",
        "remove the variable from the rule",
    ),
    "kill-relative": (
        "load-warning",
        "warning",
        "the target executable is matched by name against $PATH at run time",
        "write the absolute path of the target executable",
    ),
    "order-dependent": (
        "load-warning",
        "info",
        "oslo.rootwrap picked the winning rule in directory order (arbitrary)",
        "keep each command's rules in one file",
    ),
    "implicit-privsep-helper": (
        "load-warning",
        "info",
        "privsep-helper runs as root for the listed privsep_contexts (oslo.privsep's "
        "argument shapes, trusted config files only); each imports its module as root",
        "move services to privsepd contexts and drop privsep-helper from sudoers",
    ),
}

_PATHLIKE_ENV = re.compile(r"(FILE|PATH|DIR|CONF|CONFIG|SCRIPT|CMD|COMMAND|EXEC|HOME)", re.I)
_SENSITIVE = re.compile(
    r"(^/etc/(shadow|gshadow|sudoers)|/\.ssh/|^/root/|\.key$|\.pem$|private|secret|password)"
)
_SHARED_EXES = re.compile(
    r"(python[0-9.]*|perl|ruby|node|java|bash|sh|sleep|tail|cat|sudo|systemd|init)\Z"
)


# -- loading --------------------------------------------------------------------------


def load_warning(checker: CheckState, w: PolicyWarning) -> None:
    """A loader warning as a finding, with the attack and fix that go with its code."""
    code, severity, attack, fix = _LOAD_WARNINGS.get(w.code, ("load-warning", "warning", "", ""))
    rule, _, message = w.message.partition(": ")
    if not message or " " in rule:
        rule, message = "", w.message
    checker.add(w.path, w.line, rule, code, severity, f"{message} ({w.code})", attack, fix)


def add_config(checker: CheckState, path: str) -> Sequence[str]:
    """Lint one rootwrap.conf; returns the filters directories it names (the driver walks them)."""
    text = checker.read(path)
    if text is None:
        return ()
    checker.report.files.append(path)
    try:
        config = parse_config(text, path)
    except PolicyError as exc:
        checker.parse_error(exc, path)
        return ()
    for w in config.warnings:
        load_warning(checker, w)
    if checker.exec_dirs is None:
        checker.exec_dirs = config.exec_dirs
    for directory in config.exec_dirs:
        check_exec_dir(checker, path, directory)
    return config.filters_path


def add_filters(checker: CheckState, path: str) -> None:
    """Lint one .filters file (its loader warnings now, its rules in lint_rule)."""
    text = checker.read(path)
    if text is None:
        return
    checker.report.files.append(path)
    warnings: list[PolicyWarning] = []
    try:
        filters = parse_filters(text, path, warnings, lint=False)
    except PolicyError as exc:
        checker.parse_error(exc, path)
        return
    for filt in filters:
        lint_filter(filt, warnings)
    for w in warnings:
        load_warning(checker, w)
    checker.filters.extend(filters)


# -- per-rule checks -------------------------------------------------------------------


def lint_rule(checker: CheckState, filt: Filter) -> None:
    """Findings of one rootwrap rule (every filter class but the native command)."""
    kind = filt.kind
    if kind == "CommandFilter":
        _command_filter(checker, filt)
    elif kind in ("RegExpFilter", "ChainingRegExpFilter"):
        _regexp_filter(checker, filt)
    elif kind == "PathFilter":
        _path_filter(checker, filt)
    elif kind == "KillFilter":
        _kill_filter(checker, filt)
    elif kind == "ReadFileFilter":
        _read_file_filter(checker, filt)
    elif kind == "EnvFilter":
        _env_filter(checker, filt)
    elif kind == "IpFilter":
        checker.on(
            filt,
            "ip-filter",
            downgrade("info", filt.run_as),
            "IpFilter allows every ip command except 'netns exec' and '-batch'",
            "reconfigure any host interface, address, route, rule or namespace, and move "
            "interfaces into or out of namespaces",
            "if only some subcommands are needed, use RegExpFilter or native rules "
            "with ifname/cidr constraints",
        )
    elif kind == "IpNetnsExecFilter" and not is_root(filt.run_as):
        checker.on(
            filt,
            "never-matches",
            "warning",
            f"IpNetnsExecFilter runs as {filt.run_as!r}; it only ever matches as root",
            "",
            "set run_as to root or remove the rule",
        )


def _unrestricted(checker: CheckState, filt: Filter, via: str) -> bool:
    info = program_info(filt.exec_path)
    if info is None:
        return False
    category, example = info
    severity, attack, fix = CATEGORIES[category]
    checker.on(
        filt,
        "unrestricted-program",
        downgrade(severity, filt.run_as),
        f"{via} lets the caller pass any arguments to {os.path.basename(filt.exec_path)} "
        f"as {filt.run_as}",
        attack.format(user=filt.run_as, example=example),
        fix,
    )
    return True


def _command_filter(checker: CheckState, filt: Filter) -> None:
    if filt.args:
        checker.on(
            filt,
            "command-filter-args",
            downgrade("error", filt.run_as),
            f"CommandFilter ignores the extra columns {list(filt.args)}: any arguments are allowed",
            "pass whatever arguments the program accepts, not just the ones written",
            "use RegExpFilter (every argument anchored) or a native [[command]] with args",
        )
    _unrestricted(checker, filt, "CommandFilter")
    if under_world_writable(filt.exec_path):
        checker.on(
            filt,
            "world-writable-path",
            "error",
            f"executable {filt.exec_path!r} is under a world-writable directory",
            "any local user can replace it and have it run as root",
            "install the program in a root-owned directory",
        )


def _regexp_filter(checker: CheckState, filt: Filter) -> None:
    patterns = filt.args
    if not patterns:
        return
    info = program_info(filt.exec_path)
    category = info[0] if info else None
    for i, pattern in enumerate(patterns):
        why = exponential_reason(pattern)
        if why is not None:
            checker.on(
                filt,
                "loose-regex",
                "warning",
                f"argument {i} pattern {pattern!r} backtracks exponentially: {why}",
                "a crafted argument of a few dozen characters makes matching take hours: "
                "privsepd-rootwrap denies after its CPU bound, a helper's worker stalls "
                "with the GIL held",
                "rewrite without a repeat inside a repeat, e.g. [^\\0]+ instead of ([^/]+/?)*",
            )
        if top_level_branch(pattern):
            checker.on(
                filt,
                "loose-regex",
                "warning",
                f"argument {i} pattern {pattern!r} has a top-level '|': oslo.rootwrap "
                "appends '$' to the last alternative only",
                f"under oslo.rootwrap anything starting with an earlier alternative passes "
                f"(e.g. {pattern.split('|')[0] + ' --evil'!r}); privsepd refuses it",
                f"group the alternatives: ({pattern})",
            )
        if i == 0:
            continue
        path_shaped = literal_prefix(pattern).startswith("/")
        if category not in PATH_CATEGORIES | {"exec"} and not path_shaped:
            continue  # free text (a device name, a rate) for a program that is no writer
        for code, example in probe_path(pattern):
            _path_finding(checker, filt, i, pattern, code, example, category)
    _regexp_shell(checker, filt)


def _path_finding(
    checker: CheckState,
    filt: Filter,
    i: int,
    pattern: str,
    code: str,
    example: str,
    category: str | None,
) -> None:
    base = os.path.basename(filt.exec_path)
    severity = "error" if category in PATH_CATEGORIES else "warning"
    what = {
        "wildcard-path": "any path",
        "path-traversal": "'..' after its directory prefix",
        "world-writable-path": "a path under a world-writable directory",
    }[code]
    info = program_info(filt.exec_path)
    how = f" (e.g. `{info[1]}`)" if info and category in PATH_CATEGORIES else ""
    attack = {
        "wildcard-path": f"{base} acts on any file as {filt.run_as}{how}",
        "path-traversal": f"climb out of the intended directory: {base} acts on any "
        f"file as {filt.run_as}",
        "world-writable-path": "plant a symlink there (e.g. to /etc/shadow) before "
        f"{base} runs as {filt.run_as}",
    }[code]
    checker.on(
        filt,
        code,
        downgrade(severity, filt.run_as),
        f"argument {i} pattern {pattern!r} admits {what}, e.g. {example!r}",
        attack,
        "anchor the argument to the service's own directory with a character class "
        "that excludes '/' and '.' (e.g. /var/lib/nova/instances/[0-9a-f-]+/disk), "
        "or use PathFilter / native path_under",
    )


def _regexp_shell(checker: CheckState, filt: Filter) -> None:
    info = program_info(filt.exec_path)
    base = os.path.basename(filt.exec_path)
    if base in SHELLS or (info is not None and base.rstrip("0123456789.") in INTERPRETERS):
        _shell_rule(checker, filt)


def _shell_rule(checker: CheckState, filt: Filter) -> None:
    patterns = filt.args
    for i, pattern in enumerate(patterns[1:], 1):
        if not any(admits(pattern, flag) for flag in SCRIPT_FLAGS):
            continue
        script = patterns[i + 1] if i + 1 < len(patterns) else None
        base = os.path.basename(filt.exec_path)
        if script is None or filt.kind == "ChainingRegExpFilter":
            injected = "the script is the next word"
        else:
            injected = admits_injection(script)
        if injected is None:
            checker.on(
                filt,
                "shell-command",
                downgrade("warning", filt.run_as),
                f"{base} {pattern} runs a fixed script {script!r} through a shell",
                "the script sees root's shell environment (IFS, globbing, PATH lookups); "
                "a later edit that loosens the pattern is a root shell",
                "run the underlying command directly with its own rule",
            )
        else:
            checker.on(
                filt,
                "shell-command",
                downgrade("error", filt.run_as),
                f"{base} {pattern} SCRIPT: the script pattern {script!r} admits shell "
                f"syntax, e.g. {injected!r}",
                f"run any command as {filt.run_as} by appending it to the script",
                "never allow a shell or interpreter with -c/-e; allow the commands the "
                "script runs, each with its own rule",
            )
        return


def _path_filter(checker: CheckState, filt: Filter) -> None:
    base = os.path.basename(filt.exec_path)
    info = program_info(filt.exec_path)
    dangerous = info is not None and info[0] in PATH_CATEGORIES
    for i, constraint in enumerate(filt.args, 1):
        if not os.path.isabs(constraint):
            continue
        norm = os.path.normpath(constraint)
        if norm == "/":
            checker.on(
                filt,
                "wildcard-path",
                downgrade("error" if dangerous else "warning", filt.run_as),
                f"argument {i} base {constraint!r} admits every path",
                f"{base} acts on any file as {filt.run_as}, e.g. /etc/shadow",
                "name the service's own directory as the base",
            )
        elif under_world_writable(norm):
            checker.on(
                filt,
                "world-writable-path",
                downgrade("error", filt.run_as),
                f"argument {i} base {constraint!r} is under a world-writable directory",
                f"any local user creates {norm}/x as a symlink into /etc before "
                f"{base} runs as {filt.run_as} (PathFilter resolves it, but files that "
                "appear later are not)",
                "use a root- or service-owned directory as the base",
            )
        elif not constraint.endswith("/"):
            checker.on(
                filt,
                "path-prefix",
                "warning",
                f"argument {i} base {constraint!r} has no trailing '/'",
                f"under oslo.rootwrap the prefix is a string compare: {constraint + '-x'!r} "
                "passes (privsepd compares whole path components)",
                f"write {constraint + '/'!r}",
            )
        if norm != "/" and not under_world_writable(norm):
            user_writable_base(checker, filt, norm, f"argument {i} base")


def _kill_filter(checker: CheckState, filt: Filter) -> None:
    target = filt.args[0]
    for signal in filt.args[1:]:
        if not signal.startswith("-"):
            checker.on(
                filt,
                "kill-signal",
                "error",
                f"signal {signal!r} does not start with '-'",
                f"'kill {signal} PID' is a kill of two pids: process {signal} is signalled "
                "too, whatever it runs",
                f"write '-{signal}'",
            )
    if under_world_writable(target):
        checker.on(
            filt,
            "world-writable-path",
            "warning",
            f"target executable {target!r} is under a world-writable directory",
            "any local user can create or replace that executable, so 'processes running "
            "it' is no longer the service's own processes",
            "name the target by its root-owned install path",
        )
    elif _SHARED_EXES.match(os.path.basename(target)):
        checker.on(
            filt,
            "kill-shared-executable",
            "warning",
            f"target {target!r} is an executable many processes run",
            f"signal any process running {os.path.basename(target)}, e.g. other services "
            "on the host",
            "target the service's own wrapper executable, or use pid files",
        )


def _read_file_filter(checker: CheckState, filt: Filter) -> None:
    path = filt.file_path  # type: ignore[attr-defined]
    if under_world_writable(path):
        checker.on(
            filt,
            "world-writable-path",
            "error",
            f"file {path!r} is under a world-writable directory",
            "replace it with a symlink to /etc/shadow: cat runs as root and prints it",
            "read a file in a root-owned directory",
        )
    elif _SENSITIVE.search(path):
        checker.on(
            filt,
            "sensitive-read",
            "warning",
            f"{path!r} looks like a secret",
            "the service (and whoever compromises it) reads it",
            "confirm the service needs it; grant a narrower file if possible",
        )


def _env_filter(checker: CheckState, filt: EnvFilter) -> None:
    names = sorted(filt.env_names)
    if not names:
        return
    risky = [n for n in names if _PATHLIKE_ENV.search(n) and not dangerous_env_name(n)]
    plain = [n for n in names if n not in risky and not dangerous_env_name(n)]
    command = os.path.basename(filt.exec_path)
    written = [a for a in filt.args if "=" in a and a.partition("=")[2]]
    ignored = (
        f"; the values written in the rule ({', '.join(written)}) are not enforced"
        if written
        else ""
    )
    if risky:
        checker.on(
            filt,
            "env-unchecked",
            downgrade("error", filt.run_as),
            f"values of {', '.join(risky)} are never checked (any non-empty value){ignored}",
            f"point {command} at a file or program the attacker wrote, e.g. "
            f"{risky[0]}=/tmp/evil, and it is read or run as {filt.run_as}",
            "use a native [[command]] whose env is fixed in the policy, or a wrapper "
            "script that validates the value",
        )
    if plain:
        checker.on(
            filt,
            "env-unchecked",
            downgrade("warning", filt.run_as),
            f"values of {', '.join(plain)} are never checked (any non-empty value)"
            + ("" if risky else ignored),
            f"pass arbitrary strings to {command} through its environment",
            "fix the values in a native [[command]] env table",
        )
    _unrestricted(checker, filt, "EnvFilter (the arguments after the command are not checked)")
