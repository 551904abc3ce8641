"""What changes with the interpreter: CPython vs PyPy on the same machine.

Run as root under each interpreter (its venv has privsepd installed):
``python bench/bench_interp.py [--rounds N]``. Prints one JSON object.

Measured, each as the median over ``--rounds`` rounds after two warm-up rounds
(PyPy's JIT needs them), per-call figures from per-call timings:

* channel round trip: a fork-mode helper's ``noop()`` entrypoint, single
  thread (median and p99), and 8 threads sharing the context (calls/s);
* the floor: a forked msgpack echo on a socketpair, same framing;
* helper start: ``ctx.start()`` to the first reply;
* cffi: ``kernel.capget()`` (capget(2)) and ``kernel.get_securebits()``
  (prctl(2)) per call;
* policy engine: a 1,000-rule rootwrap index, ``match`` of an allowed
  command, and loading the index.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import sys
import threading
import time

import msgpack

from privsepd.context import Context
from privsepd.helper import kernel
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import parse_filters

HEADER = struct.Struct(">I")
bench = Context("benchinterp", capabilities=["CAP_NET_ADMIN"])


@bench.entrypoint
def noop() -> None:
    return None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _frame(obj: object) -> bytes:
    body = msgpack.packb(obj)
    return HEADER.pack(len(body)) + body


def _read(sock: socket.socket) -> object:
    (n,) = HEADER.unpack(_recv_exact(sock, 4))
    return msgpack.unpackb(_recv_exact(sock, n))


def floor_echo() -> tuple[socket.socket, int]:
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        parent.close()
        try:
            while True:
                rid = _read(child)[0]
                child.sendall(_frame([rid, "ok", None]))
        except EOFError:
            os._exit(0)
    child.close()
    return parent, pid


def per_call_us(fn, n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        fn()
        out.append((clock() - t) / 1000)
    return out


def threaded_rate(fn, threads: int, per_thread: int) -> float:
    def work() -> None:
        for _ in range(per_thread):
            fn()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return threads * per_thread / (time.perf_counter() - t0)


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def rules(n: int) -> str:
    lines = ["[Filters]"]
    for i in range(n):
        lines.append(f"r{i}: RegExpFilter, /usr/bin/prog{i}, root, prog{i}, --opt, [a-z0-9]+")
    lines.append("ip: RegExpFilter, /usr/sbin/ip, root, ip, link, set, [a-z0-9]+, up")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    sock, floor_pid = floor_echo()
    counter = iter(range(1, 1 << 62))

    def floor_call() -> None:
        sock.sendall(_frame([next(counter), "call", "noop", [], {}]))
        _read(sock)

    policy_text = rules(1000)
    index = FilterIndex(parse_filters(policy_text, "bench.filters"), ["/usr/sbin", "/usr/bin"])
    argv = ["ip", "link", "set", "eth0", "up"]

    bench.start()
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for rnd in range(args.rounds + 2):
        pd = per_call_us(noop, args.calls)
        fl = per_call_us(floor_call, args.calls)
        rate = threaded_rate(noop, 8, args.calls // 8)
        caps = per_call_us(kernel.capget, args.calls)
        sbits = per_call_us(kernel.get_securebits, args.calls)
        match = per_call_us(lambda: index.match(argv), args.calls)
        t0 = time.perf_counter()
        FilterIndex(parse_filters(policy_text, "bench.filters"), ["/usr/sbin", "/usr/bin"])
        load_ms = (time.perf_counter() - t0) * 1000
        bench.stop()
        t0 = time.perf_counter()
        bench.start()
        noop()
        start_ms = (time.perf_counter() - t0) * 1000
        if rnd < 2:
            continue  # warm-up (JIT)
        add("rtt_median_us", statistics.median(pd))
        add("rtt_p99_us", p99(pd))
        add("floor_median_us", statistics.median(fl))
        add("threads8_calls_per_s", rate)
        add("helper_start_ms", start_ms)
        add("cffi_capget_us", statistics.median(caps))
        add("cffi_prctl_securebits_us", statistics.median(sbits))
        add("policy_match_1000_rules_us", statistics.median(match))
        add("policy_load_1000_rules_ms", load_ms)
    bench.stop()
    sock.close()
    os.waitpid(floor_pid, 0)
    impl = platform.python_implementation()
    result = {
        "interpreter": f"{impl} {platform.python_version()}",
        "rounds": args.rounds,
        **{k: round(statistics.median(v), 2) for k, v in rows.items()},
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
