"""Soak privsepd as an operator would: many threads, mixed calls, helpers
killed at random, the daemon reloaded, for a bounded time.

Run as root: ``python bench/soak.py --minutes N [--mode fork|daemon|both]``.

Each mode gets its share of the time. Eight threads mix:

- ``echo`` calls whose reply must be exactly what was sent (small values and
  64 KiB payloads, tagged with thread and sequence number, so a reply routed
  to the wrong caller is recognised as *misrouted*);
- ``slow`` calls (0.2 s) with a 0.05 s timeout, which time out and pile up
  abandoned work in the helper (CallTimeout / BusyError are expected);
- ``ctx.execute(["/bin/echo", TOKEN])`` whose output must be the token.

Meanwhile a killer SIGKILLs a random helper every 0.2-1.5 s, and in daemon
mode the daemon gets SIGHUP (a policy reload, alternating two policies) every
3 s. Every call must end within its timeout plus 10 s, else it counts as
*lost* (a reply that never came and no error either).

Counted per mode: calls by outcome, misrouted and lost replies, exception
types that escape (anything but privsepd's documented errors), the client's
descriptors before and after, zombies (children left unreaped) during and
after, and the RSS of the client (and the daemon) every 10,000 calls.
Exit status 1 if anything was misrouted, lost or escaped, or descriptors or
zombies were left behind.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import privsepd  # noqa: E402
from privsepd.channel.protocol import OP_CALL  # noqa: E402

THREADS = 8
PAYLOAD = 64 * 1024

MODULE = """
import time

import privsepd

ctx = privsepd.Context("soak", user="nobody", timeout=10)


@ctx.entrypoint
def echo(value):
    return value


@ctx.entrypoint
def slow(seconds):
    time.sleep(seconds)
    return seconds
"""

POLICY = """
[context.soak]
user = "nobody"
timeout = 10.0

[[function]]
context = "soak"
name = "soakmod:echo"
strict = false

[[function]]
context = "soak"
name = "soakmod:slow"
strict = false

[[command]]
context = "soak"
name = "echo-token"
exec = "/bin/echo"
args = [{ regex = "[a-z0-9-]{1,40}" }]
run_as = "nobody"
"""

# The alternate policy a reload switches to: one more (harmless) command.
POLICY_B = (
    POLICY
    + """
[[command]]
context = "soak"
name = "true"
exec = "/bin/true"
args = []
run_as = "nobody"
"""
)


def _workdir() -> str:
    """A root-owned 0755 directory whose chain the policy trust check accepts."""
    for base in ("/run", "/var/lib", "/root"):
        try:
            path = tempfile.mkdtemp(prefix="privsepd-soak-", dir=base)
        except OSError:
            continue
        os.chmod(path, 0o755)
        return path
    raise SystemExit("soak: no root-owned base directory for the policy")


def _write(path: str, text: str, mode: int = 0o644) -> None:
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(textwrap.dedent(text))
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every child of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append((int(entry), fields[0]))
    return out


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Tally:
    """What happened, shared by the worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: collections.Counter = collections.Counter()
        self.escaped: collections.Counter = collections.Counter()
        self.misrouted: list[str] = []
        self.lost = 0
        self.calls = 0
        self.rss: list[tuple[int, float, float | None]] = []
        self.max_zombies = 0

    def add(self, kind: str) -> int:
        with self.lock:
            self.outcomes[kind] += 1
            self.calls += 1
            return self.calls


class Soak:
    """One mode's run: a context, its workers, the killer and (daemon) the reloader."""

    def __init__(self, mode: str, seconds: float, workdir: str) -> None:
        self.mode = mode
        self.seconds = seconds
        self.workdir = workdir
        self.tally = Tally()
        self.daemon: subprocess.Popen | None = None
        self.ctx: Any = None
        self.names = {"echo": "soakmod:echo", "slow": "soakmod:slow"}
        self.kills = 0
        self.reloads = 0

    # -- set-up -------------------------------------------------------------

    def start(self) -> None:
        policy = os.path.join(self.workdir, "policy.toml")
        _write(policy, POLICY)
        if self.mode == "fork":
            import soakmod  # noqa: F401 - the module the policy names

            from privsepd.policy.loader import load_policy

            self.ctx = soakmod.ctx
            self.ctx.apply_policy(load_policy([policy]))
            self.ctx.start()
            return
        sockets = os.path.join(self.workdir, "sock")
        env = dict(os.environ, PYTHONPATH=self.workdir)
        self.log = open(os.path.join(self.workdir, "serve.log"), "ab")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "privsepd.cli.main", "serve", "--policy", policy]
            + ["--socket-dir", sockets, "--drain-timeout", "2"],
            env=env,
            stderr=self.log,
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(sockets, ".control")):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("soak: the daemon did not start (see serve.log)")
            time.sleep(0.02)
        self.ctx = privsepd.Context("soak", socket_path=os.path.join(sockets, "soak.sock"))

    def stop(self) -> None:
        self.ctx.stop()
        if self.daemon is not None:
            self.daemon.send_signal(signal.SIGTERM)
            self.exit_status = self.daemon.wait(30)
            self.log.close()

    # -- the load ---------------------------------------------------------------

    def call(self, name: str, args: list, timeout: float) -> Any:
        return self.ctx._call(OP_CALL, self.names[name], args, {}, timeout)

    def worker(self, n: int, stop: float) -> None:
        rng = random.Random(n)
        seq = 0
        while time.monotonic() < stop:
            seq += 1
            tag = f"t{n}-{seq}"
            roll = rng.random()
            started = time.monotonic()
            try:
                if roll < 0.55:
                    kind, limit = "echo", 10.0
                    value = [tag, n, seq]
                    got = self.call("echo", [value], limit)
                elif roll < 0.75:
                    kind, limit = "payload", 10.0
                    value = tag.encode() + bytes([seq % 256]) * PAYLOAD
                    got = self.call("echo", [value], limit)
                elif roll < 0.85:
                    kind, limit = "slow", 0.05
                    value = 0.2
                    got = self.call("slow", [value], limit)
                else:
                    kind, limit = "execute", 10.0
                    rc, out, err = self.ctx.execute(["/bin/echo", tag], timeout=5)
                    got, value = (rc, out), (0, tag.encode() + b"\n")
                if got != value:
                    with self.tally.lock:
                        self.tally.misrouted.append(f"{kind} {tag}: got {str(got)[:80]}")
                    outcome = f"{kind}: wrong reply"
                else:
                    outcome = f"{kind}: ok"
            except privsepd.PrivsepError as exc:
                outcome = f"{kind}: {type(exc).__name__}"
            except BaseException as exc:  # exactly what must never happen
                with self.tally.lock:
                    self.tally.escaped[f"{type(exc).__name__}: {exc}"[:120]] += 1
                outcome = f"{kind}: escaped"
            if time.monotonic() - started > limit + 10:
                with self.tally.lock:
                    self.tally.lost += 1
            count = self.tally.add(outcome)
            if count % 10000 == 0:
                daemon_rss = _rss_mb(self.daemon.pid) if self.daemon else None
                with self.tally.lock:
                    self.tally.rss.append((count, _rss_mb(), daemon_rss))

    def helpers(self) -> list[int]:
        if self.daemon is None:
            pid = self.ctx.helper_pid
            return [pid] if pid else []
        return [pid for pid, state in _children(self.daemon.pid) if state != "Z"]

    def killer(self, stop: float) -> None:
        rng = random.Random(99)
        while time.monotonic() < stop:
            time.sleep(rng.uniform(0.2, 1.5))
            pids = self.helpers()
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass
            owner = self.daemon.pid if self.daemon else os.getpid()
            zombies = sum(1 for _, state in _children(owner) if state == "Z")
            with self.tally.lock:
                self.tally.max_zombies = max(self.tally.max_zombies, zombies)

    def reloader(self, stop: float) -> None:
        policy = os.path.join(self.workdir, "policy.toml")
        flip = False
        while time.monotonic() + 3 < stop:
            time.sleep(3)
            flip = not flip
            _write(policy, POLICY_B if flip else POLICY)
            self.daemon.send_signal(signal.SIGHUP)
            self.reloads += 1

    def run(self) -> dict[str, Any]:
        fds_before = _fds()
        self.start()
        stop = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self.worker, args=(n, stop)) for n in range(THREADS)]
        threads.append(threading.Thread(target=self.killer, args=(stop,)))
        if self.daemon is not None:
            threads.append(threading.Thread(target=self.reloader, args=(stop,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.seconds + 60)
        hung = sum(t.is_alive() for t in threads)
        self.stop()
        time.sleep(0.2)
        owner_zombies = [pid for pid, state in _children(os.getpid()) if state == "Z"]
        tally = self.tally
        return {
            "mode": self.mode,
            "seconds": self.seconds,
            "calls": tally.calls,
            "outcomes": dict(sorted(tally.outcomes.items())),
            "misrouted": len(tally.misrouted),
            "misrouted_examples": tally.misrouted[:5],
            "lost": tally.lost + hung,
            "escaped": dict(tally.escaped),
            "helpers_killed": self.kills,
            "reloads": self.reloads,
            "fds_before": fds_before,
            "fds_after": _fds(),
            "max_zombies_seen": tally.max_zombies,
            "zombies_after": len(owner_zombies),
            "rss_per_10k_calls": tally.rss,
            "daemon_exit": getattr(self, "exit_status", None),
        }


def failed(result: dict[str, Any]) -> list[str]:
    """The reasons a run's result is a failure (empty: it passed)."""
    why = []
    if result["misrouted"]:
        why.append(f"{result['misrouted']} misrouted replies")
    if result["lost"]:
        why.append(f"{result['lost']} lost replies")
    if result["escaped"]:
        why.append(f"escaped: {result['escaped']}")
    if result["fds_after"] > result["fds_before"]:
        why.append(f"descriptors {result['fds_before']} -> {result['fds_after']}")
    if result["zombies_after"]:
        why.append(f"{result['zombies_after']} zombies left")
    if result["daemon_exit"] not in (None, 0):
        why.append(f"daemon exited {result['daemon_exit']}")
    return why


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | seconds | calls | misrouted | lost | escaped | helpers killed | reloads "
        "| fds before/after | zombies max/after | client RSS first/last 10k (MB) "
        "| daemon RSS first/last 10k (MB) |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---|---|---|",
    ]
    for r in results:
        rss = r["rss_per_10k_calls"]
        client = f"{rss[0][1]} / {rss[-1][1]}" if rss else "-"
        daemon = f"{rss[0][2]} / {rss[-1][2]}" if rss and rss[0][2] is not None else "-"
        lines.append(
            f"| {r['mode']} | {r['seconds']:g} | {r['calls']} | {r['misrouted']} | {r['lost']} "
            f"| {sum(r['escaped'].values())} | {r['helpers_killed']} | {r['reloads']} "
            f"| {r['fds_before']} / {r['fds_after']} "
            f"| {r['max_zombies_seen']} / {r['zombies_after']} | {client} | {daemon} |"
        )
    for r in results:
        lines.append("")
        lines.append(
            f"{r['mode']} outcomes: " + ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="total run time")
    parser.add_argument("--mode", choices=("fork", "daemon", "both"), default="both")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: run as root (helpers are forked and scoped for real)", file=sys.stderr)
        return 2
    modes = ("fork", "daemon") if args.mode == "both" else (args.mode,)
    seconds = max(5.0, args.minutes * 60 / len(modes))
    workdir = _workdir()
    try:
        _write(os.path.join(workdir, "soakmod.py"), MODULE)
        sys.path.insert(0, workdir)
        results = []
        for mode in modes:
            sub = os.path.join(workdir, mode)
            os.mkdir(sub, 0o755)
            shutil.copy(os.path.join(workdir, "soakmod.py"), sub)
            results.append(Soak(mode, seconds, sub if mode == "daemon" else workdir).run())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    problems = [f"{r['mode']}: {why}" for r in results for why in failed(r)]
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
