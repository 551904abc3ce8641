"""ctx.execute latency and scaling: privsepd vs posix_spawn vs oslo.privsep.

Run as root: ``python bench/bench_execute.py [--rounds N] [--calls N]``.

Per-command wall time of ``/bin/true`` with 1 and 8 client threads, for:

* ``posix_spawn``: bare ``os.posix_spawn`` + ``waitpid`` in this process
  (the floor: no policy, no channel, no pipes);
* ``ctx.execute``: a privsepd fork-mode helper with a rootwrap policy
  (``true: CommandFilter, /bin/true, root``) and its audit log on;
* ``oslo.privsep + subprocess.run``: an oslo.privsep fork-mode helper whose
  entrypoint runs ``subprocess.run(['/bin/true'], capture_output=True)``
  (no policy, no audit -- what a service does today without rootwrap).

Each round measures every (system, threads) pair once, in a rotating order,
so drift in machine load hits all alike; ratios are taken within a round and
the report gives their medians (and the medians of the per-command times).

Beside each wall time it reads CPU per command (user + sys) from ``/proc``:
this process (the callers, and for ``posix_spawn`` the spawning parent), the
commands themselves (reaped children's CPU), each helper, and the helpers'
context switches (all their threads). On a shared 2-vCPU machine wall times
swing with other load; CPU per command moves much less.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import proc_cpu, thread_switches  # noqa: E402
from bench_rootwrap import trusted_base  # noqa: E402

SYSTEMS = ("posix_spawn", "ctx.execute", "oslo.privsep + subprocess.run")
THREADS = (1, 8)


def posix_spawn_true() -> None:
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)


def oslo_privsep_run():
    """An oslo.privsep fork-mode helper whose entrypoint runs subprocess.run(['/bin/true'])."""
    from oslo_config import cfg
    from oslo_privsep import capabilities as caps
    from oslo_privsep import priv_context

    cfg.CONF([], project="execute_bench")
    octx = priv_context.PrivContext(
        __name__,
        cfg_section="execute_bench_oslo",
        pypath=f"{__name__}.OSLO_CTX",
        capabilities=[caps.CAP_NET_ADMIN],
    )
    globals()["OSLO_CTX"] = octx

    @octx.entrypoint
    def run_true() -> int:
        import subprocess

        return subprocess.run(["/bin/true"], capture_output=True).returncode

    globals()["run_true"] = run_true
    octx.start(method=priv_context.Method.FORK)
    return octx, run_true


def _helpers() -> dict[int, str]:
    """Our live child processes (the fork-mode helpers) by pid."""
    kids: dict[int, str] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                for pid in f.read().split():
                    with open(f"/proc/{pid}/comm") as c:
                        kids[int(pid)] = c.read().strip()
        except OSError:
            pass
    return kids


def snapshot(helper_pid: int) -> dict[str, float]:
    """Counters read around a measurement; see :func:`cpu_per_command`."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    own, reaped = proc_cpu(helper_pid)
    snap = {
        "caller": me.ru_utime + me.ru_stime,
        "spawned": kids.ru_utime + kids.ru_stime,
        "helper": own,
        "helper's commands": reaped,
        "helper csw": thread_switches(helper_pid),
    }
    for pid in _helpers():
        if pid != helper_pid:  # the oslo.privsep daemon
            own, reaped = proc_cpu(pid)
            snap["oslo helper"] = snap.get("oslo helper", 0.0) + own + reaped
            snap["oslo csw"] = snap.get("oslo csw", 0) + thread_switches(pid)
    return snap


def per_command(fn, calls: int, threads: int) -> float:
    """Wall ms per command: ``calls`` commands split over ``threads`` threads."""
    each = max(1, calls // threads)
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            fn()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return (time.perf_counter() - start) / (each * threads) * 1000


def measure(fn, calls: int, threads: int, helper_pid: int) -> dict[str, float]:
    """Wall ms per command, and CPU µs / context switches per command from /proc."""
    before = snapshot(helper_pid)
    wall = per_command(fn, calls, threads)
    after = snapshot(helper_pid)
    n = max(1, calls // threads) * threads
    out = {"wall": wall}
    for key, value in after.items():
        scale = 1 if key.endswith("csw") else 1e6
        out[key] = (value - before.get(key, 0)) * scale / n
    return out


def write_policy(base: str) -> str:
    fdir = os.path.join(base, "filters")
    os.mkdir(fdir, 0o755)
    path = os.path.join(fdir, "bench.filters")
    with open(path, "w") as f:
        f.write("[Filters]\ntrue: CommandFilter, /bin/true, root\n")
    os.chmod(path, 0o644)
    conf = os.path.join(base, "rootwrap.conf")
    with open(conf, "w") as f:
        f.write(f"[DEFAULT]\nfilters_path={fdir}\nexec_dirs=/bin,/usr/bin\n")
    os.chmod(conf, 0o644)
    return conf


def machine() -> list[str]:
    from importlib import metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("privsepd", "oslo.privsep", "msgpack"))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return [
        f"- `{' '.join(platform.uname())}`; nproc {os.cpu_count()}; load at start {load}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); {versions}",
        f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    from privsepd.audit import AuditLog  # noqa: F401  (imported before the forks)
    from privsepd.context import Context
    from privsepd.helper.execute import runner_factory
    from privsepd.policy.rootwrap import load_policy

    base = trusted_base()
    try:
        policy = load_policy(write_policy(base))
        audit = os.path.join(base, "audit.log")
        os.chdir("/")  # as a systemd service (the os.posix_spawn fallback needs cwd "/")
        ctx = Context(
            "bench-exec",
            stay_root=True,
            command_runner=runner_factory(policy),
            audit=audit if args.audit else "none",
        )
        ctx.start()
        assert ctx.execute(["/bin/true"])[0] == 0
        octx, oslo_true = oslo_privsep_run()
        assert oslo_true() == 0
        fns = {
            "posix_spawn": posix_spawn_true,
            "ctx.execute": lambda: ctx.execute(["/bin/true"]),
            "oslo.privsep + subprocess.run": oslo_true,
        }
        try:
            for fn in fns.values():  # warm-up: code paths and thread pools
                for threads in THREADS:
                    per_command(fn, args.calls // 4, threads)
            pairs = [(s, t) for t in THREADS for s in SYSTEMS]
            rounds = []
            for rnd in range(args.rounds):
                k = rnd % len(pairs)
                rec: dict[str, float] = {}
                for system, threads in pairs[k:] + pairs[:k]:
                    m = measure(fns[system], args.calls, threads, ctx.helper_pid)
                    rec[f"{system} x{threads}"] = m.pop("wall")
                    for key, value in m.items():
                        rec[f"{system} x{threads} {key}"] = value
                rounds.append(rec)
                if args.verbose:
                    print(
                        f"round {rnd + 1}: "
                        + "  ".join(
                            f"{key} {rec[key]:.3f}"
                            for key in sorted(rec)
                            if key.endswith(("x1", "x8"))
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            ctx.stop()
            octx.stop()
    finally:
        os.chdir(HERE)
        shutil.rmtree(base, ignore_errors=True)
    return rounds


def report(rounds: list[dict[str, float]], args: argparse.Namespace) -> str:
    med = statistics.median
    lines = machine()
    lines += [
        "",
        f"Wall ms per `/bin/true`, medians of {len(rounds)} interleaved rounds of "
        f"{args.calls} commands (audit log {'on' if args.audit else 'off'}).",
        "",
        "| system | 1 thread | 8 threads |",
        "|---|---:|---:|",
    ]
    for s in SYSTEMS:
        lines.append(
            f"| {s} | {med(r[f'{s} x1'] for r in rounds):.3f} | "
            f"{med(r[f'{s} x8'] for r in rounds):.3f} |"
        )
    ratios = [
        ("ctx.execute ÷ posix_spawn, 1 thread", "ctx.execute x1", "posix_spawn x1", "<= 1.3"),
        ("ctx.execute ÷ posix_spawn, 8 threads", "ctx.execute x8", "posix_spawn x8", "<= 1.2"),
        (
            "ctx.execute ÷ oslo.privsep+subprocess.run, 8 threads",
            "ctx.execute x8",
            "oslo.privsep + subprocess.run x8",
            "< 1",
        ),
        (
            "ctx.execute ÷ oslo.privsep+subprocess.run, 1 thread",
            "ctx.execute x1",
            "oslo.privsep + subprocess.run x1",
            "",
        ),
    ]
    lines += ["", "| ratio (median of per-round ratios) | value | target |", "|---|---:|---|"]
    for label, a, b, target in ratios:
        value = med(r[a] / r[b] for r in rounds)
        lines.append(f"| {label} | {value:.2f} | {target} |")
    lines += [
        "",
        "Per command, medians over the rounds: CPU µs (user + sys) of the callers' process, of",
        "the commands (reaped children), of each helper; helper context switches (all threads).",
        "",
        "| system | threads | callers | commands | helper | helper csw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in SYSTEMS:
        for t in THREADS:
            key = f"{s} x{t}"

            def m(field: str, key: str = key) -> float:
                return med(r.get(f"{key} {field}", 0.0) for r in rounds)

            if s == "posix_spawn":
                cells = (m("caller"), m("spawned"), 0.0, 0.0)
            elif s == "ctx.execute":
                cells = (m("caller"), m("helper's commands"), m("helper"), m("helper csw"))
            else:  # the oslo daemon reaps its own commands: its figure holds both
                cells = (m("caller"), float("nan"), m("oslo helper"), m("oslo csw"))
            lines.append(
                f"| {s} | {t} | {cells[0]:.0f} | {cells[1]:.0f} | {cells[2]:.0f} | {cells[3]:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=400, help="commands per measurement")
    parser.add_argument("--no-audit", dest="audit", action="store_false", help="helper audit off")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (real fork-mode helpers)")
    rounds = run(args)
    print(report(rounds, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
