"""``privsepd`` command line: demo, filter authoring tools, helper modes.

Subcommands import their module lazily so ``privsepd --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from privsepd.cli.demo import run_demo

    return run_demo(args.policy)


def _filters(rest: list[str]) -> int:
    from privsepd.authoring.cli import main as authoring_main

    return authoring_main(rest)


def _serve(rest: list[str]) -> int:
    from privsepd.cli.daemon import main as daemon_main

    return daemon_main(rest)


def _status(rest: list[str]) -> int:
    from privsepd.cli.status import main as status_main

    return status_main(rest)


def _systemd_unit(rest: list[str]) -> int:
    from privsepd.cli.systemd_unit import main as unit_main

    return unit_main(rest)


def _helper(rest: list[str]) -> int:
    from privsepd.cli.serve import helper_main

    return helper_main(rest)


# Subcommands with their own argument parser get the rest of argv untouched.
_PASSTHROUGH = {
    "filters": _filters,
    "serve": _serve,
    "helper": _helper,
    "status": _status,
    "systemd-unit": _systemd_unit,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privsepd",
        description="Privilege-separation helper and policy tools for Python services.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="start a helper for the shipped demo context, make an allowed and a denied call",
    )
    demo.add_argument(
        "--policy",
        default=None,
        help="policy declaring the demo context (default: shipped filters/quickstart.toml)",
    )
    demo.set_defaults(func=_demo)

    filters = sub.add_parser(
        "filters", help="filter authoring: check, explain, convert, learn", add_help=False
    )
    filters.add_argument("rest", nargs=argparse.REMAINDER)

    serve = sub.add_parser(
        "serve",
        help="daemon mode: one socket per context, peers authorized by SO_PEERCRED",
        add_help=False,
    )
    serve.add_argument("rest", nargs=argparse.REMAINDER)

    helper = sub.add_parser(
        "helper",
        help="spawn mode: serve one client on stdin (run through sudo)",
        add_help=False,
    )
    helper.add_argument("rest", nargs=argparse.REMAINDER)

    status = sub.add_parser(
        "status",
        help="what a running privsepd serve holds: contexts, helpers, sandbox, policy",
        add_help=False,
    )
    status.add_argument("rest", nargs=argparse.REMAINDER)

    unit = sub.add_parser(
        "systemd-unit",
        help="print a hardened systemd unit for privsepd serve, fitted to a policy",
        add_help=False,
    )
    unit.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _PASSTHROUGH:
        return _PASSTHROUGH[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
