"""Command execution benchmark: privsepd-rootwrap / ctx.execute vs oslo.

Run as root: ``python bench/bench_rootwrap.py [--rounds N] [--out FILE]``.

Part 1, one command per process (what ``sudo X-rootwrap CONF cmd`` costs):
wall time of ``privsepd-rootwrap`` (policy cache on, and ``--no-cache``)
vs ``oslo-rootwrap`` vs the floor, the very interpreter the console scripts
run on started with ``-c pass``, for an allowed ``/bin/true`` with 10 and
10,000 rules. The systems are interleaved round by round so drift in
machine load hits all of them alike; medians are reported.

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
import tempfile
import threading
import time

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


def trusted_base() -> str:
    for parent in ("/run", "/var/lib", "/root"):
        st = os.stat(parent)
        if st.st_uid == 0 and not st.st_mode & 0o022:
            path = tempfile.mkdtemp(prefix="privsepd-bench-", dir=parent)
            os.chmod(path, 0o755)
            return path
    raise SystemExit("no root-owned, non-writable base directory")


# ----------------------------------------------------------------- part 1: CLI


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    rc = subprocess.call(cmd, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"{cmd} exited {rc}")
    return elapsed


def bench_cli(base: str, rounds: int) -> dict[str, float]:
    confs = {n: write_policy(base, n) for n in (10, 10_000)}
    cache = os.path.join(base, "cache")
    ours, oslo = script("privsepd-rootwrap"), script("oslo-rootwrap")
    systems = {"floor": [sys.executable, "-c", "pass"]}
    for n, conf in confs.items():
        systems[f"privsepd-rootwrap {n}"] = [ours, "--cache-dir", cache, conf, "true"]
        systems[f"privsepd-rootwrap --no-cache {n}"] = [ours, "--no-cache", conf, "true"]
        systems[f"oslo-rootwrap {n}"] = [oslo, conf, "true"]
    for cmd in systems.values():  # warm page cache, write the policy cache
        wall(cmd)
    samples: dict[str, list[float]] = {k: [] for k in systems}
    for _ in range(rounds):
        for name, cmd in systems.items():
            samples[name].append(wall(cmd))
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


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

    versions = ", ".join(
        f"{p} {md.version(p)}" for p in ("privsepd", "oslo.rootwrap", "oslo.privsep", "msgpack")
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


def report(cli: dict[str, float], exe: dict[str, float], rounds: int, calls: int) -> str:
    floor = cli["floor"]
    lines = ["## privsepd-rootwrap vs oslo-rootwrap: one command per process", ""]
    lines.append(f"Median wall ms of {rounds} interleaved rounds, allowed `/bin/true`.")
    lines.append("")
    lines.append("| system | 10 rules | 10,000 rules | × floor (10 / 10k) | oslo ÷ this |")
    lines.append("|---|---|---|---|---|")
    lines.append(f"| floor (`{sys.executable} -c pass`) | {floor:.1f} | {floor:.1f} | 1.00 | |")
    for label, key in (
        ("privsepd-rootwrap (cache)", "privsepd-rootwrap"),
        ("privsepd-rootwrap --no-cache", "privsepd-rootwrap --no-cache"),
        ("oslo-rootwrap", "oslo-rootwrap"),
    ):
        a, b = cli[f"{key} 10"], cli[f"{key} 10000"]
        oa, ob = cli["oslo-rootwrap 10"], cli["oslo-rootwrap 10000"]
        lines.append(
            f"| {label} | {a:.1f} | {b:.1f} | {a / floor:.2f} / {b / floor:.2f} "
            f"| {oa / a:.2f} / {ob / b:.2f} |"
        )
    lines.append("")
    lines.append(
        "Above the floor (ms): "
        + ", ".join(f"{k} {v - floor:.1f}" for k, v in cli.items() if k != "floor")
    )
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
        cli = bench_cli(base, args.rounds)
        exe = bench_execute(base, args.calls)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = "\n".join(head) + "\n\n" + report(cli, exe, args.rounds, args.calls) + "\n"
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
