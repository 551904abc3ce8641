"""Lint rules for native TOML policy (used by ``privsepd filters check``).

Native rules are typed, so most rootwrap holes cannot be written; what is
left is the same question asked of typed constraints: does an argument
admit any path, a path under /tmp, ``..``; does a rule hand a program free
arguments; does a rule or context hold a capability that is root in all
but name.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from privsepd.authoring.check_base import CheckState, downgrade, under_world_writable
from privsepd.authoring.check_programs import CATEGORIES, PATH_CATEGORIES, program_info
from privsepd.authoring.check_regex import backtracking, probe_path
from privsepd.authoring.check_trust import user_writable_base
from privsepd.constraints import PathUnder, Regex, Str
from privsepd.errors import PolicyError

if TYPE_CHECKING:
    from privsepd.policy.filters import Filter
    from privsepd.policy.native import PolicyFragment

__all__ = [
    "NEAR_ROOT_CAPABILITIES",
    "add_native",
    "effective_user",
    "lint_command",
    "lint_fragment",
]

# Capabilities that give full root to whoever holds them (see capabilities(7)).
NEAR_ROOT_CAPABILITIES = {
    "CAP_SYS_ADMIN": "mount, bpf, namespaces, ... (the 'new root')",
    "CAP_SYS_MODULE": "load a kernel module",
    "CAP_SYS_PTRACE": "inject code into any root process",
    "CAP_DAC_OVERRIDE": "write any file regardless of permissions",
    "CAP_SETUID": "become uid 0",
    "CAP_SETGID": "join the root group (and others)",
    "CAP_SYS_RAWIO": "write raw memory and disks",
    "CAP_SETFCAP": "give any program any capability",
    "CAP_CHOWN": "take ownership of any file",
    "CAP_FOWNER": "chmod any file",
}


def add_native(checker: CheckState, path: str) -> None:
    """Lint one native .toml file (its contexts now, its commands in lint_command)."""
    text = checker.read(path)
    if text is None:
        return
    checker.report.files.append(path)
    from privsepd.policy.native import parse_policy

    try:
        frag = parse_policy(text, path)
    except PolicyError as exc:
        checker.parse_error(exc, path)
        return
    lint_fragment(checker, frag)
    checker.contexts.update(frag.contexts)
    checker.filters.extend(frag.commands.values())


def effective_user(checker: CheckState, cmd: Filter) -> str:
    """Who a native rule's command runs as, as the runtime decides it.

    A rule without ``run_as`` runs as its context's helper user (root only
    with ``stay_root``), or for the rootwrap shim as the default account.
    """
    from privsepd.policy.filters import RUN_AS_HELPER
    from privsepd.policy.native import default_account

    if cmd.run_as != RUN_AS_HELPER:
        return cmd.run_as
    spec = checker.contexts.get(getattr(cmd, "context", None))
    if spec is not None and spec.stay_root:
        return "root"
    if spec is not None and spec.user is not None:
        return spec.user
    account = default_account()
    return account.pw_name if account is not None else "nobody"


def lint_fragment(checker: CheckState, frag: PolicyFragment) -> None:
    """Context-level findings of one native policy file."""
    for ctx in frag.contexts.values():
        src = ctx.source
        path, line = (src.path, src.line) if src else (frag.path, None)
        near = sorted(c for c in ctx.capabilities if c in NEAR_ROOT_CAPABILITIES)
        for cap in near:
            checker.add(
                path,
                line,
                ctx.name,
                "capability",
                "warning",
                f"context {ctx.name!r} keeps {cap}",
                f"whoever compromises the context's functions can {NEAR_ROOT_CAPABILITIES[cap]}",
                "keep only the capability each function needs; split contexts if needed",
            )
        if ctx.stay_root:
            checker.add(
                path,
                line,
                ctx.name,
                "capability",
                "warning",
                f"context {ctx.name!r} keeps uid 0 (stay_root)",
                "files owned by root are the helper's own: its functions can edit them",
                "drop stay_root and run the helper as a dedicated user with capabilities",
            )


def lint_command(checker: CheckState, cmd: Filter) -> None:
    """Findings of one native [[command]] rule."""
    user = effective_user(checker, cmd)
    info = program_info(cmd.exec_path)
    dangerous = info is not None and info[0] in PATH_CATEGORIES
    base = os.path.basename(cmd.exec_path)
    rest = getattr(cmd, "rest", None)
    if info is not None and isinstance(rest, Str):
        category, example = info
        severity, attack, fix = CATEGORIES[category]
        checker.on(
            cmd,
            "unrestricted-program",
            downgrade(severity, user),
            f"{{rest = true}} lets the caller pass any further arguments to {base} as {user}",
            attack.format(user=user, example=example),
            fix,
        )
    patterns = getattr(cmd, "patterns", ())
    if info is not None and info[0] == "kill" and any(not isinstance(p, str) for p in patterns):
        checker.on(
            cmd,
            "unrestricted-program",
            downgrade("warning", user),
            f"{base} with a free pid argument signals any process as {user}",
            "stop other services, or init",
            "use a rootwrap KillFilter naming the target's executable",
        )
    constraints = [*patterns, rest]
    for i, c in enumerate(constraints, 1):
        problem = None
        if isinstance(c, PathUnder):
            if c.prefix == "/":
                problem = ("wildcard-path", "path_under '/' admits every path")
            elif under_world_writable(c.prefix):
                problem = (
                    "world-writable-path",
                    f"path_under {c.prefix!r} is world-writable: files appear there after "
                    "the check",
                )
            else:
                user_writable_base(checker, cmd, c.prefix, "path_under")
        elif isinstance(c, Regex):
            if backtracking(c.pattern):
                checker.on(
                    cmd,
                    "loose-regex",
                    "warning",
                    f"argument {i}: regex {c.pattern!r} nests unbounded repeats",
                    f"an argument of up to max_len ({c.max_len}) characters makes matching "
                    "take exponential time, holding a helper worker busy",
                    "rewrite without a repeat inside a repeat, e.g. [^/]+(/[^/]+)*",
                )
            found = probe_path(c.pattern)
            if found:
                problem = (found[0][0], f"regex {c.pattern!r} admits {found[0][1]!r}")
        if problem is None:
            continue
        code, detail = problem
        which = "further arguments" if c is rest else f"argument {i}"
        checker.on(
            cmd,
            code,
            downgrade("error" if dangerous else "warning", user),
            f"{which}: {detail}",
            f"{base} runs as {user} on a path the attacker chose",
            "use path_under with the service's own directory (and must_exist where possible)",
        )
    caps = getattr(cmd, "capabilities", frozenset())
    for cap in sorted(c for c in caps if c in NEAR_ROOT_CAPABILITIES):
        checker.on(
            cmd,
            "capability",
            "warning",
            f"{base} runs with {cap}",
            f"if {base} can be steered by its arguments it can {NEAR_ROOT_CAPABILITIES[cap]}",
            "grant the narrowest capability the program needs",
        )
