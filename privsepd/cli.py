"""``privsepd`` command line: demo, filter authoring tools, helper modes.

Subcommands import their module lazily so ``privsepd --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from privsepd.demo import run_demo

    return run_demo(args.policy)


def _filters(args: argparse.Namespace) -> int:
    from privsepd.authoring import main as authoring_main

    return authoring_main(args.rest)


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
    filters.set_defaults(func=_filters)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
