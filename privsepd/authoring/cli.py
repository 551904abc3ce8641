"""``privsepd filters``: tools for people who write policy.

* ``check PATHS...``   lint rootwrap/native policy for privilege holes;
* ``explain --config CONF -- CMD...``  which rule allows a command, or why none does;
* ``convert``          rootwrap ``.filters`` to native TOML, without changing a decision;
* ``learn``            record the commands a service runs (as the service's own
                       user, never as root) and propose the tightest rules.

Exit codes: 0 success/clean/allowed, 1 findings at error severity / denied /
not converted losslessly, 2 unusable input (missing or unparsable files).
Everything here only reads policy; nothing is executed except by
``learn record``, which runs the command with the caller's own privileges.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from privsepd.errors import PolicyError

__all__ = ["decision_json", "load_for_explain", "main"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNUSABLE = 2


def _dirs(value: str) -> tuple[str, ...]:
    return tuple(d for d in value.replace(",", ":").split(":") if d)


# -- check ------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from privsepd.authoring.check import LINT_RULES, SEVERITIES, check_paths

    if args.list_rules:
        for code, what in LINT_RULES.items():
            print(f"{code:24} {what}")
        return EXIT_OK
    if not args.paths:
        print("privsepd filters check: no paths given", file=sys.stderr)
        return EXIT_UNUSABLE
    report = check_paths(args.paths, args.exec_dirs, ownership=not args.no_ownership)
    floor = SEVERITIES.index(args.min_severity)
    ignored = set(args.ignore or ())
    unknown = ignored - set(LINT_RULES)
    if unknown:
        print(f"privsepd filters check: unknown lint rule(s) {sorted(unknown)}", file=sys.stderr)
        return EXIT_UNUSABLE
    report.findings = [
        f
        for f in report.findings
        if f.code not in ignored and SEVERITIES.index(f.severity) >= floor
    ]
    if args.json:
        json.dump(
            {
                "files": report.files,
                "findings": [f.to_json() for f in report.findings],
                "summary": report.counts(),
                "exit_code": report.exit_code,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        for finding in report.findings:
            print(finding.render())
        counts = report.counts()
        print(
            f"{len(report.files)} file(s): {counts['error']} error(s), "
            f"{counts['warning']} warning(s), {counts['info']} info"
        )
    return report.exit_code


# -- explain ----------------------------------------------------------------------


class ExplainPolicy:
    """What explain needs: an index to match, and where the rules came from."""

    def __init__(self, index: Any, files: list[str], warnings: list[str]) -> None:
        self.index = index
        self.files = files
        self.warnings = warnings


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror}", path=path) from None


def _implicit_privsep_helper() -> Any:
    from privsepd.policy.filters import CommandFilter, Source

    return CommandFilter("privsep-helper", "root", source=Source("<implicit>", 0, "privsep-helper"))


def load_for_explain(
    configs: Sequence[str],
    trusted: bool = True,
    context: str | None = None,
    exec_dirs: Sequence[str] | None = None,
) -> ExplainPolicy:
    """Load policy the way the runtime would (``trusted``) or as plain files.

    A path ending in ``.conf`` is a rootwrap.conf; anything else goes
    through the native loader (``.toml``/``.filters`` files and drop-in dirs).
    """
    from privsepd.authoring.check import DEFAULT_EXEC_DIRS
    from privsepd.policy.index import FilterIndex

    if not configs:
        raise PolicyError("no --config given")
    if configs[0].endswith(".conf"):
        if len(configs) > 1:
            raise PolicyError("a rootwrap.conf names its own filters directories; give one")
        from privsepd.policy import rootwrap

        if trusted:
            policy = rootwrap.load_policy(configs[0])
            files = sorted({f.source.path for f in policy.filters})
            return ExplainPolicy(policy.index, files, [str(w) for w in policy.warnings])
        config = rootwrap.parse_config(_read(configs[0]), configs[0])
        filters: list = []
        files = []
        for directory in config.filters_path:
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                full = os.path.join(directory, name)
                if name.startswith(".") or not os.path.isfile(full):
                    continue
                files.append(full)
                filters.extend(rootwrap.parse_filters(_read(full), full))
        filters.append(_implicit_privsep_helper())
        dirs = config.exec_dirs if exec_dirs is None else exec_dirs
        return ExplainPolicy(FilterIndex(filters, dirs), files, [])
    dirs = DEFAULT_EXEC_DIRS if exec_dirs is None else exec_dirs
    if trusted:
        from privsepd.policy.loader import load_policy

        native = load_policy(list(configs))
        return ExplainPolicy(
            native.index(context, dirs), native.files, [str(w) for w in native.warnings]
        )
    from privsepd.policy.native import parse_policy
    from privsepd.policy.rootwrap import parse_filters

    rules: list = []
    files = []
    for path in configs:
        if os.path.isdir(path):
            children = [
                os.path.join(path, n)
                for n in sorted(os.listdir(path))
                if not n.startswith(".") and n.endswith((".toml", ".filters"))
            ]
        else:
            children = [path]
        for child in children:
            files.append(child)
            if child.endswith(".filters"):
                rules.extend(parse_filters(_read(child), child))
            else:
                rules.extend(parse_policy(_read(child), child).commands.values())
    chosen = [r for r in rules if getattr(r, "context", None) == context]
    return ExplainPolicy(FilterIndex(chosen, dirs), files, [])


def _rule_json(filt: Any) -> dict[str, Any] | None:
    if filt is None:
        return None
    src = filt.source
    return {"file": src.path, "line": src.line, "name": src.name, "class": filt.kind}


def decision_json(decision: Any) -> dict[str, Any]:
    """The explain --json object for one Decision (chained decisions nested)."""
    candidates = []
    for cand in decision.trace:
        entry = _rule_json(cand.filter) or {}
        entry["run_as"] = cand.filter.run_as
        if cand.miss is None:
            entry.update(matched=True, code=None, reason=None, deviation=False)
        else:
            entry.update(
                matched=False,
                code=cand.miss.code,
                reason=cand.miss.detail,
                deviation=cand.miss.deviation,
            )
        candidates.append(entry)
    return {
        "decision": "allow" if decision.allowed else "deny",
        "outcome": decision.outcome,
        "rule": _rule_json(decision.filter) if decision.allowed else None,
        "argv": list(decision.argv),
        "command": list(decision.command) if decision.command else None,
        "executable": decision.executable,
        "run_as": decision.run_as,
        "uid": decision.uid,
        "gid": decision.gid,
        "env": dict(decision.env),
        "capabilities": sorted(getattr(decision.filter, "capabilities", ()) or ())
        if decision.allowed
        else [],
        "reason": decision.reason,
        "message": decision.message or None,
        "rc": decision.rc,
        "candidates": candidates,
        "chain": decision_json(decision.chain) if decision.chain is not None else None,
    }


def _near_misses(index: Any, argv: Sequence[str]) -> list[Any]:
    """Rules for the same program spelt differently (path vs basename)."""
    if not argv:
        return []
    base = os.path.basename(argv[0])
    out = []
    for filt in index.filters:
        keys = filt.index_keys() or ()
        if argv[0] not in keys and (base in keys or os.path.basename(filt.exec_path) == base):
            out.append(filt)
    return out


def _render_decision(decision: Any, indent: str = "") -> list[str]:
    lines = []
    if decision.allowed:
        f = decision.filter
        lines.append(
            f"{indent}allow: rule {f.source.name!r} ({f.kind}) at {f.source.path}:{f.source.line}"
        )
        who = f"{decision.run_as} (uid {decision.uid}, gid {decision.gid})"
        lines.append(f"{indent}  runs: {' '.join(decision.command)}  as {who}")
        if decision.env:
            env = " ".join(f"{k}={v}" for k, v in sorted(decision.env.items()))
            lines.append(f"{indent}  env: {env}")
        caps = sorted(getattr(f, "capabilities", ()) or ())
        if caps:
            lines.append(f"{indent}  capabilities: {', '.join(caps)}")
    else:
        rc = decision.rc
        lines.append(f"{indent}deny: {decision.reason} (oslo-rootwrap exit code {rc})")
    losers = [c for c in decision.trace if c.miss is not None]
    if losers:
        lines.append(f"{indent}  rules considered before the decision:")
        for cand in losers:
            f = cand.filter
            dev = " [privsepd deviation]" if cand.miss.deviation else ""
            lines.append(
                f"{indent}    {f.source.path}:{f.source.line} {f.source.name!r} ({f.kind}): "
                f"{cand.miss.code}: {cand.miss.detail}{dev}"
            )
    if decision.chain is not None:
        lines.append(f"{indent}  chained command:")
        lines.extend(_render_decision(decision.chain, indent + "    "))
    return lines


def _explain(args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(
            "privsepd filters explain: no command given (explain --config CONF -- CMD ...)",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    try:
        policy = load_for_explain(
            args.config, trusted=not args.untrusted, context=args.context, exec_dirs=args.exec_dirs
        )
    except PolicyError as exc:
        hint = ""
        if type(exc).__name__ == "UnsafePolicyError":
            hint = " (the runtime refuses it too; --untrusted explains it anyway)"
        print(f"privsepd filters explain: {exc}{hint}", file=sys.stderr)
        return EXIT_UNUSABLE
    decision = policy.index.match(argv)
    if args.json:
        out = decision_json(decision)
        out["policy_files"] = policy.files
        out["trusted"] = not args.untrusted
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for line in _render_decision(decision):
            print(line)
        if not decision.trace:
            print(f"  no rule mentions {argv[0]!r}")
            for filt in _near_misses(policy.index, argv):
                print(
                    f"  hint: {filt.source.path}:{filt.source.line} {filt.source.name!r} "
                    f"({filt.kind}) is for {filt.exec_path!r}; call it as "
                    f"{os.path.basename(filt.exec_path)!r} or by that exact path"
                )
        if args.untrusted:
            print("  note: loaded without the ownership check (--untrusted)")
    return EXIT_OK if decision.allowed else EXIT_FINDINGS


# -- parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privsepd filters",
        description="Policy authoring: lint, explain decisions, convert, learn.",
    )
    sub = parser.add_subparsers(dest="tool", required=True)

    check = sub.add_parser(
        "check",
        help="lint policy files; exit 0 clean, 1 error findings, 2 unusable input",
        description="Lint rootwrap.conf, .filters, native .toml files or directories of them.",
    )
    check.add_argument("paths", nargs="*", help="rootwrap.conf, *.filters, *.toml or directories")
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.add_argument(
        "--exec-dirs",
        type=_dirs,
        default=None,
        help="where relative executables are looked up (default: the conf's exec_dirs, "
        "else the usual sbin/bin directories)",
    )
    check.add_argument(
        "--no-ownership",
        action="store_true",
        help="skip the root-ownership checks (linting a source checkout)",
    )
    check.add_argument(
        "--min-severity",
        choices=("info", "warning", "error"),
        default="info",
        help="hide findings below this severity (default: info, i.e. show all)",
    )
    check.add_argument(
        "--ignore", action="append", metavar="CODE", help="hide a lint rule (repeatable)"
    )
    check.add_argument("--list-rules", action="store_true", help="list the lint rules and exit")
    check.set_defaults(func=_check)

    explain = sub.add_parser(
        "explain",
        help="which rule allows a command, or why none does (exit 0 allow, 1 deny)",
        description="Decide COMMAND against the policy without running anything.",
    )
    explain.add_argument(
        "--config",
        action="append",
        required=True,
        help="rootwrap.conf, or native policy file / drop-in directory (repeatable)",
    )
    explain.add_argument("--json", action="store_true", help="one JSON object on stdout")
    explain.add_argument("--context", default=None, help="native: the context's command rules")
    explain.add_argument("--exec-dirs", type=_dirs, default=None, help="override exec_dirs")
    explain.add_argument(
        "--untrusted",
        action="store_true",
        help="read the policy even if it is not root-owned (the runtime would refuse it)",
    )
    explain.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    explain.set_defaults(func=_explain)

    from privsepd.authoring.convert import add_parser as add_convert
    from privsepd.authoring.learn import add_parser as add_learn

    add_convert(sub)
    add_learn(sub)
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``privsepd filters ARGS...``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, usage errors are 2
        return int(exc.code or 0)
    try:
        return args.func(args)
    except BrokenPipeError:
        return EXIT_OK
