"""Core channel benchmark: privsepd vs oslo.privsep vs a raw msgpack floor.

Run as root: ``python bench/bench_core.py [--quick] [--write PATH]``.

Three systems, all forked from this one process so they share the same
parent heap, interpreter and machine state:

floor
    A forked echo process on a socketpair. The client sends a length-prefixed
    msgpack ``[id, "call", "noop", [], {}]``; the echo decodes it and answers
    ``[id, "ok", None]`` the same way. Both sides are the shortest Python
    that does the job (no validation, no threads, no dispatch). Threaded
    floor: 8 threads share the socket under one lock held across
    send+receive, i.e. the single-connection serial round trip.
privsepd
    ``Context("benchcore", capabilities=["CAP_NET_ADMIN"])`` in fork mode
    (scoped helper, default unprivileged user), ``noop()`` entrypoint.
oslo.privsep
    ``PrivContext(..., capabilities=[CAP_NET_ADMIN])`` started with
    ``Method.FORK``, ``noop()`` entrypoint in ``bench/core_oslo_entry.py``.

Each round runs, for every system in a rotating order: single-thread RTT of
``--calls`` calls, 8 threads x ``--thread-calls`` calls, and ``--starts``
helper starts. Figures are medians across the quiet rounds (RTT: median of
the per-round medians / p99s); ratios are medians of per-round ratios.
Memory is read from ``/proc/PID/smaps_rollup`` of the long-lived helpers
after each round (they are warm: they have served the single-thread and
8-thread load).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import itertools
import os
import signal
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable

import msgpack
from _common import machine_info  # noqa: E402 -- bench/ is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

HEADER = struct.Struct(">I")
RECV = 256 * 1024
THREADS = 8
SYSTEMS = ("floor", "privsepd", "oslo")

_children: set[int] = set()


def _kill_children() -> None:
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


atexit.register(_kill_children)


# ------------------------------------------------------------------ floor


def _echo_main(sock: socket.socket) -> None:
    """The floor's far end: decode each frame, answer ``[id, "ok", None]``."""
    buf = bytearray()
    unpack_from = HEADER.unpack_from
    hpack = HEADER.pack
    packb = msgpack.packb
    unpackb = msgpack.unpackb
    while True:
        data = sock.recv(RECV)
        if not data:
            return
        buf += data
        out = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            (n,) = unpack_from(buf, pos)
            end = pos + 4 + n
            if end > size:
                break
            msg = unpackb(bytes(buf[pos + 4 : end]))
            pos = end
            payload = packb([msg[0], "ok", None])
            out.append(hpack(len(payload)) + payload)
        del buf[:pos]
        if out:
            sock.sendall(b"".join(out))


class Floor:
    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - echo child
            status = 0
            try:
                parent.close()
                _echo_main(child)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        child.close()
        _children.add(pid)
        self.pid = pid
        self.sock = parent
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def call(self) -> None:
        sock = self.sock
        with self.lock:
            rid = next(self.ids)
            payload = msgpack.packb([rid, "call", "noop", [], {}], use_bin_type=True)
            sock.sendall(HEADER.pack(len(payload)) + payload)
            buf = sock.recv(RECV)
            while len(buf) < 4:
                buf += sock.recv(RECV)
            (n,) = HEADER.unpack_from(buf, 0)
            while len(buf) < 4 + n:
                buf += sock.recv(RECV)
            msg = msgpack.unpackb(buf[4 : 4 + n], raw=False)
            if msg[0] != rid or msg[1] != "ok":
                raise RuntimeError(f"floor: bad reply {msg!r}")

    def stop(self) -> None:
        self.sock.close()
        os.waitpid(self.pid, 0)
        _children.discard(self.pid)


# --------------------------------------------------------------- privsepd


def _noop() -> None:
    return None


def make_privsepd():
    from privsepd.context import Context

    ctx = Context("benchcore", capabilities=["CAP_NET_ADMIN"])
    ctx_start = Context("benchcore-start", capabilities=["CAP_NET_ADMIN"])
    return ctx, ctx.entrypoint(_noop), ctx_start, ctx_start.entrypoint(_noop)


def privsepd_start_once(ctx, noop) -> tuple[float, int]:
    """Seconds from ``ctx.start()`` to the first successful call; helper pid."""
    t0 = time.perf_counter()
    ctx.start()
    noop()
    elapsed = time.perf_counter() - t0
    return elapsed, ctx.helper_pid


# ------------------------------------------------------------------- oslo


def setup_oslo():
    import core_oslo_entry
    from oslo_config import cfg

    cfg.CONF([], project="core_bench")
    return core_oslo_entry


def child_pids() -> set[int]:
    """Direct children of this process, from /proc."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        if int(fields[1]) == me:
            out.add(int(entry))
    return out


def oslo_start(ctx, noop) -> tuple[float, int]:
    from oslo_privsep import priv_context

    before = child_pids()
    t0 = time.perf_counter()
    ctx.start(method=priv_context.Method.FORK)
    noop()
    elapsed = time.perf_counter() - t0
    new = child_pids() - before
    if len(new) != 1:
        raise RuntimeError(f"cannot tell the oslo.privsep helper among {sorted(new)}")
    pid = new.pop()
    _children.add(pid)
    return elapsed, pid


def oslo_stop(ctx, pid: int) -> None:
    ctx.stop()
    os.waitpid(pid, 0)
    _children.discard(pid)


# ---------------------------------------------------------------- measure


def rtt(call: Callable[[], object], n: int) -> list[float]:
    """Per-call wall time in microseconds, single thread."""
    clock = time.perf_counter_ns
    out = [0.0] * n
    for i in range(n):
        t0 = clock()
        call()
        out[i] = (clock() - t0) / 1000.0
    return out


def threaded(call: Callable[[], object], per_thread: int, threads: int = THREADS) -> float:
    """Calls per second with ``threads`` threads each making ``per_thread`` calls."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(per_thread):
                call()
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return threads * per_thread / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def handoff_us(n: int = 300) -> float:
    """Median one-way wake-up of a thread pinned to another CPU, in µs.

    Not a system under test: it prices the unit that dominates this
    benchmark on a VM. Waking a thread on the other vCPU costs ~20 µs here,
    20x a same-CPU wake. The floor's two single-threaded processes mostly
    ping-pong on one CPU (sync wake-ups) and rarely pay it; every thread
    hand-off inside privsepd or oslo.privsep may, depending on where the
    scheduler puts the threads, which is why their RTT is bimodal (about
    40 µs when the other vCPU is busy with something else, 80-130 µs when
    the machine is idle).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return float("nan")
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()
    clock = time.perf_counter_ns

    def echo() -> None:
        os.sched_setaffinity(0, {cpus[1]})  # 0: this thread only
        for _ in range(n):
            ping.acquire()
            pong.release()

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        t = threading.Thread(target=echo)
        t.start()
        samples = []
        for _ in range(n):
            t0 = clock()
            ping.release()
            pong.acquire()
            samples.append((clock() - t0) / 2000.0)
        t.join()
    finally:
        os.sched_setaffinity(0, mine)
    return statistics.median(samples)


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_Dirty in KiB from /proc/PID/smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


# -------------------------------------------------------------------- run


def cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks used by this process tree)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy, _own_ticks()


_helper_pids: set[int] = set()


def _own_ticks() -> int:
    total = 0
    for pid in ["self", *sorted(_helper_pids)]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # utime stime (+ cutime cstime for this process: the start-time
        # helpers it has reaped)
        total += sum(int(x) for x in fields[11 : 15 if pid == "self" else 13])
    return total


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Run all rounds; return per-round records and the pids that served them."""
    if os.geteuid() != 0:
        sys.exit("bench_core.py must run as root (fork mode scopes capabilities)")
    rounds: list[dict] = []

    # Import everything before the first fork: every helper is forked from
    # the same parent heap.
    oslo = setup_oslo()
    pctx, pnoop, pctx_start, pnoop_start = make_privsepd()

    floor = Floor()
    pctx.start()
    _, oslo_pid = oslo_start(oslo.ctx, oslo.noop)
    calls = {"floor": floor.call, "privsepd": pnoop, "oslo": oslo.noop}
    pids = {"floor": floor.pid, "privsepd": pctx.helper_pid, "oslo": oslo_pid}
    _helper_pids.update(pids.values())

    def start_once(system: str) -> tuple[float, int]:
        """Start time in µs and Private_Dirty after ``fresh_calls`` calls."""
        if system == "privsepd":
            elapsed, pid = privsepd_start_once(pctx_start, pnoop_start)
            for _ in range(args.fresh_calls):
                pnoop_start()
            pd = smaps(pid)["Private_Dirty"]
            pctx_start.stop()
        else:
            elapsed, pid = oslo_start(oslo.ctx_start, oslo.noop_start)
            for _ in range(args.fresh_calls):
                oslo.noop_start()
            pd = smaps(pid)["Private_Dirty"]
            oslo_stop(oslo.ctx_start, pid)
        return elapsed * 1e6, pd

    # Warm-up: every code path once, and threads up to their pool sizes.
    for system in SYSTEMS:
        rtt(calls[system], args.calls // 4 or 1)
        threaded(calls[system], max(1, args.thread_calls // 4))
    for system in ("privsepd", "oslo"):
        start_once(system)

    order = list(SYSTEMS)
    hz = os.sysconf("SC_CLK_TCK")
    for rnd in range(args.rounds):
        record: dict = {s: {"start": [], "fresh_pd": []} for s in SYSTEMS}
        busy0, own0 = cpu_ticks()
        t0 = time.monotonic()
        k = rnd % len(order)
        for system in order[k:] + order[:k]:
            res = record[system]
            samples = rtt(calls[system], args.calls)
            res["rtt_med"] = statistics.median(samples)
            res["rtt_p99"] = percentile(samples, 0.99)
            res["tput"] = threaded(calls[system], args.thread_calls)
            if system != "floor":
                for _ in range(args.starts):
                    elapsed, pd = start_once(system)
                    res["start"].append(elapsed)
                    res["fresh_pd"].append(pd)
        record["handoff"] = handoff_us()
        busy1, own1 = cpu_ticks()
        # CPU that other processes on the machine used during this round, in cores.
        record["foreign"] = max(0, (busy1 - busy0) - (own1 - own0)) / hz / (time.monotonic() - t0)
        for system in SYSTEMS:
            mem = smaps(pids[system])
            record[system]["pd"] = mem["Private_Dirty"]
            record[system]["rss"] = mem["Rss"]
        rounds.append(record)
        if args.verbose:
            print(
                f"round {rnd + 1}/{args.rounds} (foreign load {record['foreign']:.2f} cores, "
                f"wake {record['handoff']:.1f}us): "
                + "  ".join(
                    f"{s} {record[s]['rtt_med']:.1f}us {record[s]['tput']:.0f}/s" for s in SYSTEMS
                ),
                file=sys.stderr,
                flush=True,
            )

    oslo_stop(oslo.ctx, oslo_pid)  # first: its helper holds copies of the others' fds
    pctx.stop()
    floor.stop()
    return rounds, pids


QUIET = 0.25  # cores of foreign CPU load below which a round counts as quiet


def summarize(rounds: list[dict]) -> dict:
    """Medians across ``rounds`` (RTT p99: median of the per-round p99s)."""
    med = statistics.median
    summary = {}
    for system in SYSTEMS:
        recs = [r[system] for r in rounds]
        starts = [x for r in recs for x in r["start"]]
        fresh = [x for r in recs for x in r["fresh_pd"]]
        summary[system] = {
            "rtt_med": med(r["rtt_med"] for r in recs),
            "rtt_p99": med(r["rtt_p99"] for r in recs),
            "tput": med(r["tput"] for r in recs),
            "start": med(starts) if starts else None,
            "pd": med(r["pd"] for r in recs),
            "rss": med(r["rss"] for r in recs),
            "fresh_pd": med(fresh) if fresh else None,
            "n_start": len(starts),
        }
    summary["rounds"] = len(rounds)
    return summary


RATIOS = (
    ("privsepd RTT / floor RTT", "<= 1.3"),
    ("oslo RTT / privsepd RTT", ">= 2"),
    ("privsepd 8-thread calls/s / oslo", ">= 2"),
    ("privsepd start / oslo start", "<= 1"),
    ("privsepd Private_Dirty / oslo", "<= 0.5"),
)


def round_ratios(f: dict, p: dict, o: dict) -> list[float]:
    """The five target ratios from one set of figures (a round or a summary)."""
    med = statistics.median
    return [
        p["rtt_med"] / f["rtt_med"],
        o["rtt_med"] / p["rtt_med"],
        p["tput"] / o["tput"],
        med(p["start"]) / med(o["start"]) if p["start"] and o["start"] else float("nan"),
        p["pd"] / o["pd"],
    ]


def ratios(rounds: list[dict]) -> list[tuple[str, float, str, bool]]:
    """Each ratio computed within every round (same conditions), then the median."""
    per_round = [round_ratios(r["floor"], r["privsepd"], r["oslo"]) for r in rounds]
    out = []
    for i, (name, target) in enumerate(RATIOS):
        values = [x[i] for x in per_round if x[i] == x[i]]
        value = statistics.median(values) if values else float("nan")
        op, bound = target.split()
        ok = value <= float(bound) if op == "<=" else value >= float(bound)
        out.append((name, value, target, ok))
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rounds: list[dict], args: argparse.Namespace) -> str:
    quiet = [r for r in rounds if r["foreign"] < QUIET]
    busy = [r for r in rounds if r["foreign"] >= QUIET]
    if len(quiet) >= max(3, len(rounds) // 3):
        main_rounds = quiet
        basis = (
            f"the {len(quiet)} quiet rounds of {len(rounds)} (other processes used "
            f"< {QUIET} of a core during the round)"
        )
    else:
        main_rounds = rounds
        basis = f"all {len(rounds)} rounds (too few quiet ones: the machine was busy)"
    lines = [f"Medians over {basis}.", ""]
    lines += table(main_rounds, args)
    if len(busy) >= 3 and main_rounds is quiet:
        lines += [
            "",
            f"Contended rounds ({len(busy)}: another process kept "
            f"{statistics.median(r['foreign'] for r in busy):.2f} cores busy, median), "
            "for comparison:",
            "",
        ]
        lines += table(busy, args, short=True)
    lines += [
        "",
        f"Rounds: {args.rounds} (order rotated each round); per round and system: "
        f"{args.calls} single-thread calls, {THREADS} threads x {args.thread_calls} calls, "
        f"{args.starts} helper start(s). RTT p99 is the median of the per-round p99s.",
    ]
    return "\n".join(lines)


def table(rounds: list[dict], args: argparse.Namespace, short: bool = False) -> list[str]:
    summary = summarize(rounds)
    lines = [
        "| | floor | privsepd | oslo.privsep |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        ("RTT median (µs)", "rtt_med", ".1f"),
        ("RTT p99 (µs)", "rtt_p99", ".1f"),
        (f"{THREADS}-thread calls/s", "tput", ",.0f"),
        ("helper start to first call (ms)", "start", ".2f"),
        ("helper Private_Dirty, warm (KiB)", "pd", ",.0f"),
        ("helper Rss, warm (KiB)", "rss", ",.0f"),
        (f"helper Private_Dirty, fresh + {args.fresh_calls} calls (KiB)", "fresh_pd", ",.0f"),
    ]
    if short:
        rows = rows[:4]
    for label, key, spec in rows:
        cells = []
        for system in SYSTEMS:
            value = summary[system][key]
            if key == "start" and value is not None:
                value = value / 1000.0
            cells.append(fmt(value, spec))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| cross-CPU thread wake-up (µs, machine probe, not a system) | "
        f"{statistics.median(r['handoff'] for r in rounds):.1f} | | |"
    )
    lines += [
        "",
        "| ratio (per round, median across rounds) | value | target | met |",
        "|---|---:|---:|:---:|",
    ]
    for name, value, target, ok in ratios(rounds):
        if short and "Private_Dirty" in name:
            continue
        lines.append(f"| {name} | {value:.2f} | {target} | {'yes' if ok else 'NO'} |")
    return lines


def write_results(path: str, table: str, info: dict, args: argparse.Namespace) -> None:
    machine = "\n".join(f"- {k}: `{v}`" for k, v in info.items())
    text = f"""# Core channel benchmark (bench/bench_core.py)

Command: `python bench/bench_core.py{" --quick" if args.quick else ""}` (as root).

{machine}

{table}

## Method

- **floor**: a forked echo process on a socketpair. Client: pack
  `[id, "call", "noop", [], {{}}]` with a 4-byte length prefix, `sendall`,
  `recv` until the whole reply frame is in, unpack `[id, "ok", None]`. Echo: the
  same framing, decode, answer; no validation, no dispatch, no threads. The
  {THREADS}-thread floor shares that one socket under a lock held across
  send+receive, so it is the serial round trip of one connection: a system that
  pipelines and batches several in-flight calls per read/write may beat it.
- **privsepd**: `Context("benchcore", capabilities=["CAP_NET_ADMIN"])`, fork
  mode (helper scoped to CAP_NET_ADMIN, default unprivileged user), one
  `@ctx.entrypoint def noop()`. Start time: `ctx.start()` + first `noop()` on a
  second context that is stopped and started again.
- **oslo.privsep**: `PrivContext("core_oslo_entry", capabilities=[CAP_NET_ADMIN])`,
  `start(method=Method.FORK)` (default `thread_pool_size` = nproc), `noop()`
  entrypoint in `bench/core_oslo_entry.py`. Start time: `ctx.start(FORK)` +
  first `noop()`. Helper pid: the new child of the bench process.
- All three helpers are forked from the same bench process after every import,
  so they start from the same parent heap. Private_Dirty/Rss come from
  `/proc/PID/smaps_rollup` of the long-lived helpers after each round (warm:
  they have served single-thread and {THREADS}-thread load); the "fresh" row is
  the start-time helper after its first {args.fresh_calls} calls.
- Rounds interleave the three systems (order rotated each round). A round in
  which other processes used >= {QUIET} of a core (from `/proc/stat` minus this
  process tree) is "contended"; the headline medians use the quiet rounds when
  there are enough. Ratios are computed within each round (same conditions for
  all three) and the median of the per-round ratios is shown. `loadavg` is the
  1-minute average and includes this benchmark's own load.
"""
    # A hand-written "## Analysis" section (profiling notes) survives reruns.
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    marker = old.find("\n## Analysis")
    if marker >= 0:
        text += old[marker:]
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode (< 30 s)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--calls", type=int, help="single-thread calls per round")
    parser.add_argument("--thread-calls", type=int, help="calls per thread per round")
    parser.add_argument("--starts", type=int, help="helper starts per round per system")
    parser.add_argument("--fresh-calls", type=int, default=100)
    parser.add_argument(
        "--write",
        metavar="PATH",
        help="write the results file (default: bench/RESULTS_core.md on a full run)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    quick = dict(rounds=4, calls=500, thread_calls=150, starts=3)
    full = dict(rounds=31, calls=4000, thread_calls=1500, starts=1)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    info = machine_info("msgpack", "oslo.privsep")
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    gc.collect()
    rounds, _ = run(args)
    info["loadavg"] = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    info["wall time"] = f"{time.monotonic() - t0:.1f} s"
    table = render(rounds, args)
    print("\n".join(f"{k}: {v}" for k, v in info.items()))
    print()
    print(table)
    path = args.write or (None if args.quick else os.path.join(HERE, "RESULTS_core.md"))
    if path:
        write_results(path, table, info, args)
        print(f"\nwrote {path}")
    busy = sum(1 for r in rounds if r["foreign"] >= QUIET)
    if busy > len(rounds) // 2:
        print(
            f"\nWARNING: other processes were busy in {busy} of {len(rounds)} rounds: "
            "figures are noisy, rerun when the machine is idle",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
