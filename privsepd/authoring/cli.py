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
import sys

from privsepd.authoring.explain import decision_json, explain_command, load_for_explain

# decision_json and load_for_explain live in explain.py; re-exported for existing importers.
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
    explain.set_defaults(func=explain_command)

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
