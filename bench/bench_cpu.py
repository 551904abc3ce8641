"""CPU per call on each side of the channel, for one or two privsepd trees.

Run as root: ``python bench/bench_cpu.py [--tree LABEL=PATH ...] [--rounds N]``.

Each round starts a fresh interpreter per tree (alternating the order), in
which a fork-mode ``Context`` serves ``--threads`` threads calling
``noop()``; the service's CPU comes from ``getrusage`` and the helper's from
``/proc/PID/stat`` around the timed calls. Wall-clock rates on a shared
machine swing with other load; CPU per call moves much less, so this is the
figure to compare code with. Without ``--tree`` it measures the privsepd
this checkout imports; ``--tree before=/path/to/old/checkout`` adds another
(it is put first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import os, sys, threading, time, resource, json
sys.path.insert(0, os.environ["BENCH_DIR"])
from _common import proc_cpu, thread_switches
if not os.environ.get("BENCH_CPU_OSLO"):
    from privsepd.context import Context

def _noop():
    return None

def helper_seconds(pid):
    return proc_cpu(pid)[0]

def own_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def own_switches():
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads, ended ones too
    return r.ru_nvcsw + r.ru_nivcsw

helper_switches = thread_switches

if os.environ.get("BENCH_CPU_OSLO"):
    # oslo.privsep's helper, the same way bench_core.py starts it.
    from oslo_config import cfg
    from oslo_privsep import priv_context
    sys.path.insert(0, os.environ["BENCH_CPU_OSLO"])
    import core_oslo_entry
    cfg.CONF([], project="core_bench")
    before = set(os.listdir(f"/proc/{os.getpid()}/task"))
    kids0 = {p for p in os.listdir("/proc") if p.isdigit()}
    core_oslo_entry.ctx.start(method=priv_context.Method.FORK)
    noop = core_oslo_entry.noop
    noop()
    ctx = core_oslo_entry.ctx
    pid = None
    for p in {p for p in os.listdir("/proc") if p.isdigit()} - kids0:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == os.getpid():
                    pid = int(p)
        except OSError:
            pass
else:
    ctx = Context("bench-cpu", capabilities=["CAP_NET_ADMIN"])
    noop = ctx.entrypoint(_noop)
    ctx.start()
    pid = ctx.helper_pid
threads, per = int(sys.argv[1]), int(sys.argv[2])

def run(per):
    barrier = threading.Barrier(threads + 1)
    def work():
        barrier.wait()
        for _ in range(per):
            noop()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0

run(max(1, per // 5))
c0, h0 = own_seconds(), helper_seconds(pid)
s0, t0 = own_switches(), helper_switches(pid)
wall = run(per)
c1, h1 = own_seconds(), helper_seconds(pid)
s1, t1 = own_switches(), helper_switches(pid)
n = threads * per
print(json.dumps({"rate": n / wall, "client": 1e6 * (c1 - c0) / n, "helper": 1e6 * (h1 - h0) / n,
                  "client_cs": (s1 - s0) / n, "helper_cs": (t1 - t0) / n}))
ctx.stop()
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1500, help="calls per thread")
    parser.add_argument("--oslo", action="store_true", help="measure oslo.privsep's helper too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_cpu.py must run as root (fork mode scopes capabilities)")
    trees = {"this": None}
    for item in args.tree:
        label, _, path = item.partition("=")
        trees[label] = os.path.abspath(path)
    if args.oslo:
        trees["oslo.privsep"] = "oslo"
    results: dict[str, list[dict]] = {label: [] for label in trees}
    for rnd in range(args.rounds):
        order = list(trees) if rnd % 2 == 0 else list(trees)[::-1]
        for label in order:
            env = dict(os.environ, BENCH_DIR=os.path.dirname(os.path.abspath(__file__)))
            if trees[label] == "oslo":
                env["BENCH_CPU_OSLO"] = os.path.dirname(os.path.abspath(__file__))
            elif trees[label] is not None:
                env["PYTHONPATH"] = trees[label]
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.threads), str(args.calls)],
                env=env,
                cwd="/",
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(f"{label}: {out.stderr}")
            results[label].append(json.loads(out.stdout))
    print(f"{args.threads} threads x {args.calls} calls, medians of {args.rounds} rounds")
    print(
        "| tree | calls/s | service CPU per call (µs) | helper CPU per call (µs) "
        "| service context switches per call | helper context switches per call |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    keys = ("rate", "client", "helper", "client_cs", "helper_cs")
    for label, runs in results.items():
        med = {k: statistics.median(r.get(k, float("nan")) for r in runs) for k in keys}
        print(
            f"| {label} | {med['rate']:,.0f} | {med['client']:.1f} | {med['helper']:.1f} "
            f"| {med['client_cs']:.2f} | {med['helper_cs']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
