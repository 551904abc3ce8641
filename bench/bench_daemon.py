"""Daemon mode measured: call RTT and connect + first call, vs fork mode and oslo.rootwrap.

Run as root: ``python bench/bench_daemon.py [--rounds N] [--write PATH]``.

Systems, all driven from this one process, interleaved round by round (the
order rotates each round), medians across rounds:

privsepd daemon
    ``privsepd serve`` (a child of this process, as under systemd) with a
    native policy: context ``bench-daemon`` (CAP_NET_ADMIN, user nobody), one
    ``noop`` function from a root-owned module in a trusted directory, and a
    ``/bin/true`` command. The service side is
    ``Context("bench-daemon", socket_path=...)``: each connection gets a
    freshly forked, scoped helper from the daemon.
privsepd fork
    ``Context("bench-fork", capabilities=["CAP_NET_ADMIN"])`` in fork mode, the
    same ``noop`` (registered in this process).
oslo.rootwrap daemon
    ``oslo_rootwrap.client.Client([oslo-rootwrap-daemon, rootwrap.conf])``:
    the one call it has is ``execute``, so its RTT row is
    ``execute(["true"])``. (A command its filters refuse would be a cheaper
    probe, but the daemon answers it with a RemoteError wrapping a
    ValueError it fails to serialize.) Its connect is the client's first
    ``execute``, which starts the daemon (a new interpreter) itself: a
    rootwrap daemon lives per client process, not per machine.

Measures:

* call RTT: single-thread ``noop()`` and ``ping()`` (privsepd only);
* ``execute(["/bin/true"])`` RTT through each daemon;
* connect + first call: a new connection and helper (daemon: ``connect`` +
  SO_PEERCRED check + the daemon's fork and scoping + handshake; fork: fork +
  scoping + handshake) up to the first ``noop()`` returning; rootwrap: client
  construction up to the first ``execute(["true"])`` returning. Closing the
  connection is not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time

from _common import machine_info, trusted_base  # noqa: E402 -- bench/ is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
BIN = os.path.dirname(sys.executable)
CONTEXT = "bench-daemon"
MODULE = "privsepd_bench_daemon_entry"

ENTRY_SOURCE = f'''
"""The daemon's side of bench/bench_daemon.py: one do-nothing entrypoint."""

from privsepd.context import Context

ctx = Context({CONTEXT!r})


@ctx.entrypoint
def noop():
    return None
'''

POLICY = f"""
[context.{CONTEXT}]
capabilities = ["CAP_NET_ADMIN"]
user = "nobody"

[[function]]
context = "{CONTEXT}"
name = "{MODULE}:noop"

[[command]]
context = "{CONTEXT}"
name = "true"
exec = "/bin/true"
args = []
run_as = "nobody"
"""

ROOTWRAP_FILTERS = "[Filters]\ntrue: CommandFilter, /bin/true, root\n"


def script(name: str) -> str:
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} missing: pip install -e '.[test,bench]'")
    return path


def write(path: str, text: str, mode: int = 0o644) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


class PrivsepdDaemon:
    """``privsepd serve`` for the bench context, started and stopped by the bench."""

    def __init__(self, base: str) -> None:
        mods = os.path.join(base, "modules")
        os.mkdir(mods, 0o755)
        write(os.path.join(mods, MODULE + ".py"), ENTRY_SOURCE)
        policy = write(os.path.join(base, "policy.toml"), textwrap.dedent(POLICY))
        sockets = os.path.join(base, "sock")
        # (An inherited PYTHONPATH stays after the module directory: the
        # bench can then measure another privsepd tree, e.g. a baseline.)
        path = os.pathsep.join(p for p in (mods, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "privsepd.cli.main",
                "serve",
                "--policy",
                policy,
                "--socket-dir",
                sockets,
            ],
            env=env,
            stderr=subprocess.PIPE,
        )
        self.path = os.path.join(sockets, CONTEXT + ".sock")
        deadline = time.monotonic() + 20
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise SystemExit(f"privsepd serve did not start: {err}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(self.path)
                return True
            except OSError:
                return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rtt(call, n: int) -> float:
    """Median single-thread wall time of ``call`` in µs."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        call()
        out.append((clock() - t0) / 1000.0)
    return statistics.median(out)


def run(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, str]]:
    if os.geteuid() != 0:
        sys.exit("bench_daemon.py must run as root")
    from oslo_rootwrap import client as rw_client

    from privsepd.context import Context

    # The command's cwd must be one the helper (nobody) can enter.
    os.chdir("/")
    base = trusted_base("privsepd-bench-daemon-")
    daemon = PrivsepdDaemon(base)
    fdir = os.path.join(base, "filters")
    os.mkdir(fdir, 0o755)
    write(os.path.join(fdir, "bench.filters"), ROOTWRAP_FILTERS)
    conf = write(
        os.path.join(base, "rootwrap.conf"),
        f"[DEFAULT]\nfilters_path={fdir}\nexec_dirs=/sbin,/usr/sbin,/bin,/usr/bin\n",
    )
    rootwrap_cmd = [script("oslo-rootwrap-daemon"), conf]

    def _noop() -> None:
        return None

    fork_ctx = Context("bench-fork", capabilities=["CAP_NET_ADMIN"])
    fork_noop = fork_ctx.entrypoint(_noop)
    fork_ctx.start()
    dctx = Context(CONTEXT, socket_path=daemon.path)
    dctx.start()

    def dnoop() -> None:
        dctx._call("call", f"{MODULE}:noop", [], {})

    rootwrap = rw_client.Client(rootwrap_cmd)
    if rootwrap.execute(["true"])[0] != 0:
        raise SystemExit("oslo.rootwrap daemon cannot run true")

    def daemon_connect() -> float:
        ctx = Context(CONTEXT, socket_path=daemon.path)
        try:
            t0 = time.perf_counter()
            ctx.start()
            ctx._call("call", f"{MODULE}:noop", [], {})
            return (time.perf_counter() - t0) * 1e6
        finally:
            ctx.stop()

    fork_start_ctx = Context("bench-fork-start", capabilities=["CAP_NET_ADMIN"])
    fork_start_noop = fork_start_ctx.entrypoint(_noop)

    def fork_connect() -> float:
        try:
            t0 = time.perf_counter()
            fork_start_ctx.start()
            fork_start_noop()
            return (time.perf_counter() - t0) * 1e6
        finally:
            fork_start_ctx.stop()

    def rootwrap_connect() -> float:
        t0 = time.perf_counter()
        c = rw_client.Client(rootwrap_cmd)
        try:
            if c.execute(["true"])[0] != 0:
                raise RuntimeError("rootwrap: true failed")
            return (time.perf_counter() - t0) * 1e6
        finally:
            if c._process is not None:
                c._process.terminate()  # the client has no public stop
                c._process.wait()

    measures = {
        "rtt privsepd daemon": lambda: rtt(dnoop, args.calls),
        "rtt privsepd daemon ping": lambda: rtt(dctx.ping, args.calls),
        "rtt privsepd fork": lambda: rtt(fork_noop, args.calls),
        "true privsepd daemon": lambda: rtt(lambda: dctx.execute(["/bin/true"]), args.execs),
        "true rootwrap daemon": lambda: rtt(lambda: rootwrap.execute(["true"]), args.execs),
        "connect privsepd daemon": lambda: statistics.median(
            daemon_connect() for _ in range(args.connects)
        ),
        "connect privsepd fork": lambda: statistics.median(
            fork_connect() for _ in range(args.connects)
        ),
        "connect rootwrap daemon": lambda: statistics.median(
            rootwrap_connect() for _ in range(max(1, args.connects // 4))
        ),
    }
    results: dict[str, list[float]] = {k: [] for k in measures}
    try:
        for fn in measures.values():  # warm-up
            fn()
        names = list(measures)
        for rnd in range(args.rounds):
            k = rnd % len(names)
            for name in names[k:] + names[:k]:
                results[name].append(measures[name]())
            if args.verbose:
                print(
                    f"round {rnd + 1}/{args.rounds}: "
                    + "  ".join(f"{n.split()[0]} {results[n][-1]:.0f}" for n in names),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        dctx.stop()
        fork_ctx.stop()
        if rootwrap._process is not None:
            rootwrap._process.terminate()
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)
    return results, machine_info("msgpack", "oslo.rootwrap")


def render(results: dict[str, list[float]], info: dict[str, str], args) -> str:
    med = {k: statistics.median(v) for k, v in results.items()}

    def ratio(a: str, b: str) -> float:
        xs, ys = results[a], results[b]
        return statistics.median(xs[i] / ys[i] for i in range(len(xs)))

    lines = [f"- {k}: `{v}`" for k, v in info.items()]
    lines += [
        "",
        f"Medians over {args.rounds} interleaved rounds (order rotated each round).",
        "",
        "| measure | privsepd daemon | privsepd fork | oslo.rootwrap daemon |",
        "|---|---:|---:|---:|",
        f"| call RTT (`noop()`), µs | "
        f"{med['rtt privsepd daemon']:.1f} | {med['rtt privsepd fork']:.1f} | (no such call) |",
        f"| `ctx.ping()` RTT, µs | {med['rtt privsepd daemon ping']:.1f} | | |",
        f"| `execute(['/bin/true'])`, µs | {med['true privsepd daemon']:.0f} | | "
        f"{med['true rootwrap daemon']:.0f} |",
        f"| connect + first call, ms | {med['connect privsepd daemon'] / 1000:.2f} | "
        f"{med['connect privsepd fork'] / 1000:.2f} | "
        f"{med['connect rootwrap daemon'] / 1000:.2f} |",
        "",
        "| ratio (per round, median) | value |",
        "|---|---:|",
        f"| daemon RTT / fork RTT | {ratio('rtt privsepd daemon', 'rtt privsepd fork'):.2f} |",
        "| rootwrap daemon `true` / privsepd daemon `true` | "
        f"{ratio('true rootwrap daemon', 'true privsepd daemon'):.2f} |",
        "| daemon connect+first / fork start+first | "
        f"{ratio('connect privsepd daemon', 'connect privsepd fork'):.2f} |",
        "| rootwrap connect+first / privsepd daemon connect+first | "
        f"{ratio('connect rootwrap daemon', 'connect privsepd daemon'):.2f} |",
        "",
        f"Per round: {args.calls} calls per RTT row, {args.execs} per `true` row, "
        f"{args.connects} connects per privsepd connect row, "
        f"{max(1, args.connects // 4)} per rootwrap connect row.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--connects", type=int, default=8)
    parser.add_argument("--write", metavar="PATH", help="also write the table to PATH")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    results, info = run(args)
    text = render(results, info, args)
    print(text)
    if args.write:
        with open(args.write, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
