"""``privsepd`` command line: demo, filter authoring tools, helper modes.

Subcommands import their module lazily so ``privsepd --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from privsepd.cli.demo import run_demo

    return run_demo(args.policy)


# Subcommands with their own argument parser get the rest of argv untouched:
# name -> (module, function, one-line help). The module is imported only when
# its subcommand runs.
_PASSTHROUGH = {
    "filters": (
        "privsepd.authoring.cli",
        "main",
        "filter authoring: check, explain, convert, learn",
    ),
    "serve": (
        "privsepd.cli.daemon",
        "main",
        "daemon mode: one socket per context, peers authorized by SO_PEERCRED",
    ),
    "helper": (
        "privsepd.cli.serve",
        "helper_main",
        "spawn mode: serve one client on stdin (run through sudo)",
    ),
    "status": (
        "privsepd.cli.status",
        "main",
        "what a running privsepd serve holds: contexts, helpers, sandbox, policy",
    ),
    "systemd-unit": (
        "privsepd.cli.systemd_unit",
        "main",
        "print a hardened systemd unit for privsepd serve, fitted to a policy",
    ),
}


def _passthrough(name: str, rest: list[str]) -> int:
    import importlib

    module, function, _ = _PASSTHROUGH[name]
    return getattr(importlib.import_module(module), function)(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privsepd",
        description="Privilege-separation helper and policy tools for Python services.",
    )
    from privsepd import __version__

    parser.add_argument("--version", action="version", version=f"privsepd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="start a helper for the shipped demo context, make an allowed and a denied call",
    )
    demo.add_argument(
        "--policy",
        default=None,
        help="policy declaring the demo context (default: quickstart.toml shipped in the package)",
    )
    demo.set_defaults(func=_demo)

    for name, (_, _, text) in _PASSTHROUGH.items():
        passthrough = sub.add_parser(name, help=text, add_help=False)
        passthrough.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
