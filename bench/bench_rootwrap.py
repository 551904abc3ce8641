"""Command execution benchmark: privsepd-rootwrap / ctx.execute vs oslo.

Run as root: ``python bench/bench_rootwrap.py [--rounds N] [--out FILE]``.

Part 1, one command per process (what ``sudo X-rootwrap CONF cmd`` costs):
wall time of ``privsepd-rootwrap`` (policy cache on, and ``--no-cache``)
vs ``oslo-rootwrap`` vs the floor, for an allowed ``/bin/true`` with 10 and
10,000 rules. The floor is the interpreter named in the console script's
own ``#!`` line started with ``-I -c pass`` (never a ``python3`` from PATH,
which may be a pyenv wrapper script; a site ``.pth`` hook runs in the floor
as in the script). The systems are interleaved round by round, in an order
that rotates each round, so drift in machine load hits all of them alike;
medians of wall time and of the process tree's CPU time (user + system,
from wait4) are reported, and the minimum wall time.

Part 2, commands from a long-lived service: ``ctx.execute(['/bin/true'])``
through a running helper vs bare ``os.posix_spawn`` + ``waitpid`` vs
oslo.rootwrap's daemon client vs oslo.privsep (fork mode) running
``subprocess.run`` in its helper; 1 thread and 8 threads (per-command wall
time = elapsed / commands).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time

from _common import trusted_base  # noqa: E402 -- bench/ is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def script(name: str) -> str:
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} missing: pip install -e '.[test,bench]'")
    return path


# ----------------------------------------------------------------- policy files


def write_policy(base: str, rules: int) -> str:
    """rootwrap.conf + one .filters file with `rules` rules, the last allowing true."""
    fdir = os.path.join(base, f"filters{rules}")
    os.mkdir(fdir, 0o755)
    lines = ["[Filters]"]
    for i in range(rules - 1):
        kind = i % 4
        if kind == 0:
            lines.append(f"cmd{i}: CommandFilter, /usr/bin/cmd{i}, root")
        elif kind == 1:
            lines.append(f"cmd{i}: RegExpFilter, cmd{i}, root, cmd{i}, -[a-z]+, [0-9]+")
        elif kind == 2:
            lines.append(f"cmd{i}: PathFilter, /usr/bin/cmd{i}, root, /var/lib/x{i}")
        else:
            lines.append(f"cmd{i}: EnvFilter, env, root, A{i}=, cmd{i}")
    lines.append("true: CommandFilter, /bin/true, root")
    path = os.path.join(fdir, "bench.filters")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    conf = os.path.join(base, f"rootwrap{rules}.conf")
    with open(conf, "w") as f:
        f.write(f"[DEFAULT]\nfilters_path={fdir}\nexec_dirs=/sbin,/usr/sbin,/bin,/usr/bin\n")
    os.chmod(conf, 0o644)
    return conf


# ----------------------------------------------------------------- part 1: CLI


def wall(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and the children it waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} exited {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def interpreter_of(path: str) -> str:
    """The interpreter a console script's ``#!`` line names (pip writes no arguments)."""
    with open(path, "rb") as f:
        line = f.readline()
    if not line.startswith(b"#!"):
        raise SystemExit(f"{path} has no #! line")
    words = line[2:].decode().split()
    if len(words) != 1 or not os.path.isabs(words[0]):
        raise SystemExit(f"{path}: unexpected #! line {line!r}")
    return words[0]


def bench_cli(
    base: str, rounds: int, compare: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """{system: {"wall": median ms, "min": min ms, "cpu": median CPU ms}}.

    ``compare`` maps a label to another ``privsepd-rootwrap`` script (an
    older commit installed in its own venv), measured in the same rounds.
    """
    confs = {n: write_policy(base, n) for n in (10, 10_000)}
    cache = os.path.join(base, "cache")
    ours, oslo = script("privsepd-rootwrap"), script("oslo-rootwrap")
    if interpreter_of(ours) != interpreter_of(oslo):
        raise SystemExit("privsepd-rootwrap and oslo-rootwrap run on different interpreters")
    systems = {"floor": [interpreter_of(ours), "-I", "-c", "pass"]}
    for n, conf in confs.items():
        systems[f"privsepd-rootwrap {n}"] = [ours, "--cache-dir", cache, conf, "true"]
        systems[f"privsepd-rootwrap --no-cache {n}"] = [ours, "--no-cache", conf, "true"]
        systems[f"oslo-rootwrap {n}"] = [oslo, conf, "true"]
        for label, other in (compare or {}).items():
            other_cache = os.path.join(base, f"cache-{label}")
            systems[f"{label} {n}"] = [other, "--cache-dir", other_cache, conf, "true"]
    for label, other in (compare or {}).items():
        systems[f"floor {label}"] = [interpreter_of(other), "-I", "-c", "pass"]
    for cmd in systems.values():  # warm page cache, write the policy cache
        wall(cmd)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in systems}
    order = list(systems)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            samples[name].append(wall(systems[name]))
    return {
        k: {
            "wall": statistics.median(w for w, _ in v) * 1000,
            "min": min(w for w, _ in v) * 1000,
            "cpu": statistics.median(c for _, c in v) * 1000,
        }
        for k, v in samples.items()
    }


# ----------------------------------------------------------------- part 2: execute


def per_call(fn, calls: int, threads: int = 1) -> float:
    """Median-of-5 wall ms per call, `calls` calls split over `threads` threads."""
    for _ in range(20):
        fn()
    results = []
    for _ in range(5):
        each = calls // threads

        def work(each: int = each) -> None:
            for _ in range(each):
                fn()

        workers = [threading.Thread(target=work) for _ in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        results.append((time.perf_counter() - start) / (each * threads))
    return statistics.median(results) * 1000


def posix_spawn_true() -> None:
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)


def oslo_privsep_run():
    """oslo.privsep fork-mode helper whose entrypoint runs subprocess.run(['/bin/true'])."""
    from oslo_config import cfg
    from oslo_privsep import capabilities as caps
    from oslo_privsep import priv_context

    cfg.CONF([], project="rootwrap_bench")
    octx = priv_context.PrivContext(
        "__main__",
        cfg_section="rootwrap_bench_oslo",
        pypath="__main__.OSLO_CTX",
        capabilities=[caps.CAP_NET_ADMIN],
    )
    sys.modules["__main__"].OSLO_CTX = octx

    @octx.entrypoint
    def run_true() -> int:
        import subprocess as sp

        return sp.run(["/bin/true"], capture_output=True).returncode

    sys.modules["__main__"].run_true = run_true
    octx.start(method=priv_context.Method.FORK)
    return octx, run_true


def bench_execute(base: str, calls: int) -> dict[str, float]:
    from privsepd.context import Context
    from privsepd.helper.execute import runner_factory
    from privsepd.policy.rootwrap import load_policy

    conf = os.path.join(base, "rootwrap10.conf")
    policy = load_policy(conf)
    # Services run from "/" (systemd's default); the helper inherits the cwd,
    # and the runner's posix_spawn fast path needs the command's cwd ("/") to
    # be the helper's (posix_spawn has no chdir action).
    os.chdir("/")
    ctx = Context("bench-exec", stay_root=True, command_runner=runner_factory(policy))
    ctx.start()
    assert ctx.execute(["/bin/true"])[0] == 0

    from oslo_rootwrap import client

    daemon = client.Client([script("oslo-rootwrap-daemon"), conf])
    assert daemon.execute(["true"])[0] == 0
    octx, oslo_true = oslo_privsep_run()
    assert oslo_true() == 0

    systems = {
        "posix_spawn": posix_spawn_true,
        "ctx.execute": lambda: ctx.execute(["/bin/true"]),
        "oslo.rootwrap daemon": lambda: daemon.execute(["true"]),
        "oslo.privsep + subprocess.run": oslo_true,
    }
    out = {}
    try:
        for threads in (1, 8):
            for name, fn in systems.items():
                out[f"{name} x{threads}"] = per_call(fn, calls, threads)
    finally:
        ctx.stop()
        octx.stop()
        daemon._process.terminate()  # the client has no public stop
    return out


# ----------------------------------------------------------------- report


def machine() -> list[str]:
    from importlib import metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    versions = ", ".join(
        f"{p} {version(p)}" for p in ("privsepd", "oslo.rootwrap", "oslo.privsep", "msgpack")
    )
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return [
        f"- `uname -a`: `{' '.join(platform.uname())}`",
        f"- nproc: {os.cpu_count()}; load average at start: {' '.join(load)}",
        f"- Python {platform.python_version()} ({sys.executable}); {versions}",
        f"- PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} "
        "(privsepd's .pyc files were compiled before the run, as an install does)",
    ]


def report_cli(cli: dict[str, dict[str, float]], rounds: int, floor_cmd: str) -> list[str]:
    floor = cli["floor"]["wall"]
    labels = [k[len("floor ") :] for k in cli if k.startswith("floor ")]
    lines = ["## privsepd-rootwrap vs oslo-rootwrap: one command per process", ""]
    lines.append(
        f"{rounds} interleaved rounds, allowed `/bin/true`; floor: `{floor_cmd}`. "
        "Median wall ms (minimum in brackets), then wall ms above the floor, the "
        "ratio to the floor, oslo-rootwrap's wall ÷ this, and median CPU ms "
        "(user + system of the process tree) above the floor's."
    )
    lines.append("")
    lines.append(
        "| system | rules | wall ms (min) | above floor | × floor | oslo ÷ this | CPU above floor |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    f = cli["floor"]
    lines.append(f"| floor | – | {floor:.1f} ({f['min']:.1f}) | 0 | 1.00 | | 0 |")
    for label in labels:
        g = cli[f"floor {label}"]
        lines.append(
            f"| floor of {label}'s interpreter | – | {g['wall']:.1f} ({g['min']:.1f}) "
            f"| {g['wall'] - floor:.1f} | {g['wall'] / floor:.2f} | | {g['cpu'] - f['cpu']:.1f} |"
        )
    for label, key in (
        ("privsepd-rootwrap (cache)", "privsepd-rootwrap"),
        ("privsepd-rootwrap --no-cache", "privsepd-rootwrap --no-cache"),
        ("oslo-rootwrap", "oslo-rootwrap"),
        *((f"{label} (cache)", label) for label in labels),
    ):
        for n in (10, 10000):
            m, oslo = cli[f"{key} {n}"], cli[f"oslo-rootwrap {n}"]
            lines.append(
                f"| {label} | {n:,} | {m['wall']:.1f} ({m['min']:.1f}) | {m['wall'] - floor:.1f} "
                f"| {m['wall'] / floor:.2f} | {oslo['wall'] / m['wall']:.2f} "
                f"| {m['cpu'] - f['cpu']:.1f} |"
            )
    return lines


def report(cli: dict, exe: dict[str, float], rounds: int, calls: int, floor_cmd: str) -> str:
    lines = report_cli(cli, rounds, floor_cmd) if cli else []
    if not exe:
        return "\n".join(lines)
    lines += ["", "## ctx.execute vs posix_spawn vs oslo daemons: commands from a service", ""]
    lines.append(f"Wall ms per `/bin/true`, median of 5 batches of {calls} commands.")
    lines.append("")
    lines.append("| system | 1 thread | 8 threads | ÷ posix_spawn (1 thr) |")
    lines.append("|---|---|---|---|")
    spawn = exe["posix_spawn x1"]
    for name in (
        "posix_spawn",
        "ctx.execute",
        "oslo.rootwrap daemon",
        "oslo.privsep + subprocess.run",
    ):
        one, eight = exe[f"{name} x1"], exe[f"{name} x8"]
        lines.append(f"| {name} | {one:.3f} | {eight:.3f} | {one / spawn:.2f} |")
    ratio = exe["oslo.rootwrap daemon x1"] / exe["ctx.execute x1"]
    lines.append("")
    lines.append(f"ctx.execute is {ratio:.2f}× faster than the oslo.rootwrap daemon (1 thread).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=800)
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=SCRIPT",
        help="also measure another privsepd-rootwrap script (e.g. an older commit's venv)",
    )
    parser.add_argument(
        "--part", choices=("all", "cli", "execute"), default="all", help="which part to run"
    )
    args = parser.parse_args()
    out_path = os.path.abspath(args.out) if args.out else None
    if os.geteuid() != 0:
        raise SystemExit("run as root (sudo-less rootwrap and real helpers)")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.join(HERE, "..", "privsepd")],
        check=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""),
    )
    base = trusted_base()
    try:
        head = machine()
        compare = dict(c.split("=", 1) for c in args.compare)
        cli = bench_cli(base, args.rounds, compare) if args.part in ("all", "cli") else {}
        if args.part == "execute":
            write_policy(base, 10)
        exe = bench_execute(base, args.calls) if args.part in ("all", "execute") else {}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor_cmd = f"{interpreter_of(script('privsepd-rootwrap'))} -I -c pass"
    body = report(cli, exe, args.rounds, args.calls, floor_cmd)
    text = "\n".join(head) + "\n\n" + body + "\n"
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
