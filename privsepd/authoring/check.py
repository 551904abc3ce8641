"""``privsepd filters check``: lint rootwrap and native policy for privilege holes.

A rule is judged by what a compromised service could do with it, not by its
syntax: every :class:`Finding` names the place (file:line, rule name), the
lint rule (a stable ``code``), a severity, what is wrong, what an attacker
can do with it and how to tighten it.

This module is the driver: :func:`check_paths` walks the paths given,
hands each file to the module for its format and each rule to the rules for
its kind, then runs the checks that need every rule at once (duplicate
names, shadowing, chaining). The rest of the linter, by concern:

* :mod:`.check_base`: Finding, Report, the lint-rule and severity tables,
  default exec dirs, and the state of a run every other module adds to;
* :mod:`.check_rootwrap`: rootwrap.conf and ``.filters`` files and rules;
* :mod:`.check_native`: native TOML files and ``[[command]]`` rules;
* :mod:`.check_trust`: ownership of policy files, exec dirs and executables;
* :mod:`.check_programs`: what each dangerous program can do;
* :mod:`.check_regex`: probing argument patterns with attacker-shaped strings.

Files are read without the runtime trust check (an operator lints a checkout
too); ownership is reported as the ``unsafe-ownership`` finding instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from privsepd.authoring import check_native, check_rootwrap
from privsepd.authoring.check_base import (
    DEFAULT_EXEC_DIRS,
    LINT_RULES,
    SEVERITIES,
    CheckState,
    Finding,
    Report,
    downgrade,
    is_root,
)
from privsepd.authoring.check_programs import program_info
from privsepd.authoring.check_regex import admits, literal_prefix
from privsepd.authoring.check_trust import check_executable, check_owned
from privsepd.policy.filters import Filter
from privsepd.policy.rootwrap import PolicyWarning

__all__ = [
    "DEFAULT_EXEC_DIRS",
    "Checker",
    "Finding",
    "LINT_RULES",
    "Report",
    "SEVERITIES",
    "check_paths",
]


class Checker(CheckState):
    """Accumulates findings over files; see :func:`check_paths`."""

    # -- inputs ----------------------------------------------------------------------
    def add_path(self, path: str) -> None:
        """A policy file, or a directory of them, by its suffix."""
        if not os.path.exists(path):
            self.add(path, None, "", "parse-error", "error", "no such file or directory")
            self.report.unusable = True
            return
        check_owned(self, path)
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if name.startswith(".") or not os.path.isfile(full):
                    continue
                if name.endswith(".toml"):
                    check_native.add_native(self, full)
                else:
                    if not name.endswith(".filters"):
                        check_rootwrap.load_warning(
                            self,
                            PolicyWarning(
                                "odd-suffix",
                                "loaded although it does not end in .filters",
                                full,
                            ),
                        )
                    check_rootwrap.add_filters(self, full)
            return
        if path.endswith(".toml"):
            check_native.add_native(self, path)
        elif path.endswith(".conf"):
            self.add_config(path)
        else:
            check_rootwrap.add_filters(self, path)

    def add_config(self, path: str) -> None:
        """A rootwrap.conf, then every filters directory it names."""
        for directory in check_rootwrap.add_config(self, path):
            if os.path.isdir(directory):
                self.add_path(directory)
            else:
                check_rootwrap.load_warning(
                    self,
                    PolicyWarning("missing-dir", "filters directory does not exist", directory),
                )

    # -- per-rule checks -------------------------------------------------------------------
    def finish(self) -> Report:
        for filt in self.filters:
            self.check_filter(filt)
        self.check_names()
        self.check_shadowing()
        self.check_chaining()
        self.report.findings.sort(key=lambda f: (f.path, f.line or 0, f.code))
        return self.report

    def check_filter(self, filt: Filter) -> None:
        if filt.kind == "NativeCommand":
            check_native.lint_command(self, filt)
        else:
            check_rootwrap.lint_rule(self, filt)
        if filt.kind not in ("ReadFileFilter", "KillFilter"):
            check_executable(self, filt)

    # -- cross-rule checks -----------------------------------------------------------------
    def check_names(self) -> None:
        seen: dict[str, Filter] = {}
        for filt in self.filters:
            name = filt.source.name
            first = seen.get(name)
            if first is None:
                seen[name] = filt
                continue
            if first.source.path == filt.source.path:
                continue  # the loader already reported it (and dropped the first)
            self.on(
                filt,
                "duplicate-name",
                "info",
                f"name also used at {first.source.path}:{first.source.line}",
                "audit records and explain output cannot tell the two rules apart",
                "give every rule a unique name across files",
            )

    def check_shadowing(self) -> None:
        earlier: dict[str, list[Filter]] = {}
        for filt in self.filters:
            keys = filt.index_keys()
            if filt.kind == "EnvFilter" or filt.chaining or not keys:
                for key in keys or ():
                    earlier.setdefault(key, []).append(filt)
                continue
            shadow = None
            for key in keys:
                for prev in earlier.get(key, ()):
                    if _covers(prev, filt):
                        shadow = prev
                        break
                if shadow:
                    break
            if shadow is not None:
                same = _signature(shadow) == _signature(filt)
                self.on(
                    filt,
                    "shadowed",
                    "warning",
                    (
                        f"identical to the rule at {shadow.source.path}:{shadow.source.line}"
                        if same
                        else f"never wins: {shadow.kind} {shadow.source.name!r} at "
                        f"{shadow.source.path}:{shadow.source.line} accepts every command "
                        f"this rule accepts (as {shadow.run_as})"
                    ),
                    "" if same else "the tighter rule (or its run_as) written here never applies",
                    "remove one of the two rules" if same else "remove or tighten the earlier rule",
                )
            for key in keys:
                earlier.setdefault(key, []).append(filt)

    def check_chaining(self) -> None:
        for filt in self.filters:
            if not filt.chaining or filt.kind == "ChainingFilter":
                continue
            if filt.kind == "IpNetnsExecFilter" and not is_root(filt.run_as):
                continue
            reachable = [
                f for f in self.filters if not f.chaining and f.run_as == filt.run_as and f != filt
            ]
            risky = sorted(
                {
                    f.source.name
                    for f in reachable
                    if f.kind in ("CommandFilter", "EnvFilter") and program_info(f.exec_path)
                }
            )
            if filt.kind == "IpNetnsExecFilter":
                what = "runs, in any network namespace (the name is not checked),"
            else:
                what = f"prefixes {os.path.basename(filt.exec_path)} to"
            shown = ", ".join(risky[:8]) + (f" and {len(risky) - 8} more" if len(risky) > 8 else "")
            extra = f"; unrestricted ones among them: {shown}" if risky else ""
            self.on(
                filt,
                "chaining",
                downgrade("warning", filt.run_as),
                f"{filt.kind} {what} any command another {filt.run_as} rule allows "
                f"({len(reachable)} rules{extra})",
                "every other rule is also reachable through this one, so its reach is the "
                "union of all of them (inside namespaces the host's view may differ)",
                "keep the reachable rules tight; in native policy give the chained "
                "commands their own context so only they can be chained",
            )


def _signature(filt: Filter) -> tuple:
    """Everything that decides what a rule accepts and how the command runs.

    A native rule keeps its argument patterns outside ``args`` (which is
    empty), so its patterns, context, capabilities and environment count too:
    two ``ip`` rules with different arguments are not "identical".
    """
    base = (filt.kind, filt.exec_path, filt.run_as, filt.args)
    if filt.kind == "NativeCommand":
        native: Any = filt
        return (
            *base,
            native.context,
            native.patterns,
            native.rest,
            native.capabilities,
            tuple(sorted(native.env.items())),
        )
    return base


def _accepts(filt: Filter) -> tuple:
    """What a rule accepts (not how it runs): for native rules of one context."""
    native: Any = filt
    return (filt.exec_path, native.context, native.patterns, native.rest)


def _covers(prev: Filter, filt: Filter) -> bool:
    """True if prev accepts every argv filt accepts (cheap, sound cases only)."""
    if prev.chaining or prev.kind == "EnvFilter":
        return False
    if _signature(prev) == _signature(filt):
        return True
    if prev.kind == "NativeCommand" and filt.kind == "NativeCommand":
        # Same context, executable and argument patterns: the first one wins
        # at runtime whatever run_as, capabilities or env the second one has.
        return _accepts(prev) == _accepts(filt)
    if prev.kind != "CommandFilter":
        return False
    if filt.kind in ("CommandFilter", "PathFilter"):
        return prev.exec_path == filt.exec_path or (
            os.path.basename(prev.exec_path) == prev.exec_path
            and prev.exec_path == os.path.basename(filt.exec_path)
            and os.path.basename(filt.exec_path) == filt.exec_path
        )
    if filt.kind == "RegExpFilter" and filt.args:
        return (
            admits(filt.args[0], os.path.basename(prev.exec_path))
            and prev.exec_path == filt.exec_path
            and literal_prefix(filt.args[0]) == filt.args[0]
        )
    return False


def check_paths(
    paths: Iterable[str],
    exec_dirs: Sequence[str] | None = None,
    ownership: bool = True,
) -> Report:
    """Lint every path (rootwrap.conf, .filters, .toml, or a directory of them)."""
    checker = Checker(exec_dirs, ownership)
    for path in paths:
        checker.add_path(path)
    return checker.finish()
