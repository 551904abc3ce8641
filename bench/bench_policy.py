"""Rootwrap policy: load and match time, privsepd vs oslo.rootwrap, 10 to 10,000 rules.

Both engines load the same generated ``.filters`` files (a mix of
CommandFilter, RegExpFilter, PathFilter, EnvFilter, KillFilter rules on
distinct executables, plus two unkeyable regexp rules) and decide the same
commands. Load time: oslo's ``wrapper.load_filters`` vs privsepd's
``load_filters`` + ``FilterIndex`` (including the root-ownership checks of
every file and directory). Match time: oslo's ``wrapper.match_filter`` vs
``FilterIndex.match`` for a command allowed by a rule in the middle of the
policy. Medians of many runs.

Run as root (policy files must be root-owned): ``python bench/bench_policy.py
[--write bench/RESULTS_policy.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

from oslo_rootwrap import wrapper

# measure this checkout, not whatever privsepd is installed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from privsepd.policy.index import FilterIndex  # noqa: E402
from privsepd.policy.rootwrap import load_filters  # noqa: E402

SIZES = (10, 1_000, 10_000)
RULES_PER_FILE = 500


def rule(i: int) -> str:
    kind = i % 20
    if kind < 12:
        return f"r{i}: CommandFilter, tool{i}, root"
    if kind < 16:
        return f"r{i}: RegExpFilter, tool{i}, root, tool{i}, -[a-z]+, [0-9]+"
    if kind < 18:
        return f"r{i}: PathFilter, tool{i}, root, pass, /var/lib/x{i}"
    if kind < 19:
        return f"r{i}: EnvFilter, env, root, TAG{i}=, tool{i}"
    return f"r{i}: KillFilter, root, /usr/sbin/tool{i}, -9"


def write_rules(base: str, n: int, bindir: str) -> str:
    d = os.path.join(base, f"rules-{n}")
    os.makedirs(d, mode=0o755)
    lines = [rule(i) for i in range(n - 2)]
    # two rules that cannot be keyed by argv[0]
    lines.insert(len(lines) // 3, "fb1: RegExpFilter, true, root, (mount|umount), /mnt/[a-z]+")
    lines.insert(2 * len(lines) // 3, "fb2: RegExpFilter, true, root, [a-z]+ctl, status")
    for start in range(0, len(lines), RULES_PER_FILE):
        path = os.path.join(d, f"{start // RULES_PER_FILE:04d}.filters")
        with open(path, "w") as f:
            f.write("[Filters]\n" + "\n".join(lines[start : start + RULES_PER_FILE]) + "\n")
    return d


def target(n: int) -> list[str]:
    """A command allowed by a CommandFilter near the middle of the policy."""
    i = (n - 2) // 2
    while i % 20 >= 12:
        i -= 1
    return [f"tool{i}", "--flag", "value"]


def median_time(fn, runs: int, inner: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def bench(base: str, bindir: str) -> list[dict]:
    rows = []
    for n in SIZES:
        d = write_rules(base, n, bindir)
        argv = target(n)
        os.symlink("/bin/true", os.path.join(bindir, argv[0]))
        exec_dirs = [bindir]

        load_runs = 15 if n <= 1000 else 7
        oslo_load = median_time(lambda d=d: wrapper.load_filters([d]), load_runs, 1)
        ours_load = median_time(
            lambda d=d, e=exec_dirs: FilterIndex(load_filters([d]), e), load_runs, 1
        )

        oslo_filters = wrapper.load_filters([d])
        index = FilterIndex(load_filters([d]), exec_dirs)
        assert (
            wrapper.match_filter(oslo_filters, list(argv), exec_dirs).name
            == index.match(argv).filter.name
        )
        oslo_inner = max(3, 20_000 // n)
        oslo_match = median_time(
            lambda f=oslo_filters, a=argv, e=exec_dirs: wrapper.match_filter(f, list(a), e),
            15,
            oslo_inner,
        )
        ours_match = median_time(lambda i=index, a=argv: i.match(a), 31, 5_000)
        rows.append(
            {
                "rules": n,
                "oslo_load": oslo_load,
                "ours_load": ours_load,
                "oslo_match": oslo_match,
                "ours_match": ours_match,
            }
        )
    return rows


def report(rows: list[dict]) -> str:
    base = rows[0]
    out = [
        "| rules | oslo load | privsepd load | load ratio (oslo/privsepd) "
        "| oslo match | privsepd match | match ratio (oslo/privsepd) "
        "| privsepd match vs 10 rules |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['rules']:,} | {r['oslo_load'] * 1e3:.2f} ms | {r['ours_load'] * 1e3:.2f} ms "
            f"| {r['oslo_load'] / r['ours_load']:.2f}x "
            f"| {r['oslo_match'] * 1e6:.1f} µs | {r['ours_match'] * 1e6:.2f} µs "
            f"| {r['oslo_match'] / r['ours_match']:.1f}x "
            f"| {r['ours_match'] / base['ours_match']:.2f}x |"
        )
    return "\n".join(out)


def machine() -> str:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    return (
        f"- machine: `{uname}`\n"
        f"- nproc: {os.cpu_count()}\n"
        f"- python: {platform.python_version()}\n"
        f"- oslo.rootwrap: {metadata.version('oslo.rootwrap')}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", help="write a Markdown report to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: policy files must be root-owned", file=sys.stderr)
        return 2
    base = tempfile.mkdtemp(prefix="privsepd-bench-policy-", dir="/run")
    os.chmod(base, 0o755)
    bindir = os.path.join(base, "bin")
    os.makedirs(bindir)
    try:
        rows = bench(base, bindir)
    finally:
        shutil.rmtree(base)
    table = report(rows)
    print(machine())
    print(table)
    growth = rows[-1]["ours_match"] / rows[0]["ours_match"]
    faster = rows[-1]["oslo_load"] / rows[-1]["ours_load"]
    verdict = (
        f"- per-match at {SIZES[-1]:,} rules is {growth:.2f}x the time at {SIZES[0]} rules "
        f"(target ≤ 1.2x): {'met' if growth <= 1.2 else 'NOT met'}\n"
        f"- load of {SIZES[-1]:,} rules is {faster:.2f}x oslo's speed "
        f"(target > 1x): {'met' if faster > 1 else 'NOT met'}\n"
    )
    print(verdict)
    if args.write:
        with open(args.write, "w") as f:
            f.write(
                "# Rootwrap policy benchmark: privsepd vs oslo.rootwrap\n\n"
                "Produced by `python bench/bench_policy.py --write bench/RESULTS_policy.md` "
                "(as root). Same generated `.filters` files for both engines "
                f"({RULES_PER_FILE} rules per file; CommandFilter, RegExpFilter, PathFilter, "
                "EnvFilter, KillFilter on distinct executables, plus two regexp rules "
                "that cannot be keyed). Load: oslo `wrapper.load_filters` vs privsepd "
                "`load_filters` (with root-ownership checks of every file and directory) + "
                "`FilterIndex`. Match: oslo `wrapper.match_filter` vs `FilterIndex.match` "
                "of a command allowed by a rule in the middle of the policy. Medians.\n\n"
                + machine()
                + "\n"
                + table
                + "\n\n"
                + verdict
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
