"""Many caller threads on one forked helper: each gets its own reply, or the right error.

The client batches requests from concurrent callers into shared writes and
routes replies that arrive together in one read; these tests hammer that
against a real forked, scoped helper (root required).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from privsepd import BusyError, CallTimeout, HelperDiedError
from privsepd.context import Context

THREADS = 8


def _blob(i: int) -> bytes:
    # Sizes from nothing to past one 64 KiB read, so that some replies
    # arrive split across reads and several share one.
    size = (0, 7, 300, 5000, 70000)[i % 5]
    return bytes([i % 251]) * size


@pytest.fixture
def ctx(root):
    ctx = Context("t-threads", audit="none", max_workers=8, max_abandoned=2)

    @ctx.entrypoint
    def echo(thread: int, call: int, blob: bytes) -> list:
        return [thread, call, blob]

    @ctx.entrypoint(timeout=0.1)
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @ctx.entrypoint
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    ctx.echo, ctx.slow, ctx.sleep = echo, slow, sleep  # type: ignore[attr-defined]
    ctx.start()
    yield ctx
    ctx.stop()


def run_threads(target, n: int = THREADS) -> None:
    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller thread hangs"


def test_eight_threads_with_distinct_arguments_each_get_their_own_reply(ctx):
    wrong: list[str] = []

    def worker(n: int) -> None:
        for i in range(300):
            blob = _blob(n + i)
            got = ctx.echo(n, i, blob)
            if got != [n, i, blob]:
                wrong.append(f"thread {n} call {i} got {got[:2]!r} ({len(got[2])} bytes)")

    run_threads(worker)
    assert wrong == []


def test_timeouts_among_busy_threads_leave_every_other_reply_with_its_caller(ctx):
    wrong: list[str] = []
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(40):
            if n % 4 == 0:
                try:
                    ctx.slow(0.3)
                    errors.append(f"thread {n}: slow call returned within its 0.1 s timeout")
                except (CallTimeout, BusyError):
                    pass
            else:
                blob = _blob(n * i)
                got = ctx.echo(n, i, blob)
                if got != [n, i, blob]:
                    wrong.append(f"thread {n} call {i} got {got[:2]!r}")

    run_threads(worker)
    assert wrong == [] and errors == []
    time.sleep(0.4)  # the abandoned slow calls finish; their late replies are dropped
    assert ctx.echo(99, 0, b"after") == [99, 0, b"after"]


def test_a_helper_killed_mid_batch_fails_every_caller_in_flight_with_helper_died(ctx):
    outcomes: list[BaseException | float] = []
    lock = threading.Lock()
    started = threading.Barrier(THREADS + 1)

    def worker(n: int) -> None:
        started.wait()
        try:
            result: BaseException | float = ctx.sleep(5.0)
        except BaseException as exc:
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.3)  # all eight requests are in the helper
    os.kill(ctx.helper_pid, signal.SIGKILL)
    t0 = time.monotonic()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a caller thread hangs"
    assert time.monotonic() - t0 < 3.0
    assert len(outcomes) == THREADS
    assert all(isinstance(o, HelperDiedError) for o in outcomes), outcomes
    # The next call starts a new helper.
    assert ctx.echo(1, 1, b"x") == [1, 1, b"x"]


def test_the_helper_lets_more_fast_commands_run_at_once_when_libc_spawn_frees_the_gil(
    monkeypatch,
):
    from privsepd.channel.server import EXEC_PARALLEL, EXEC_PARALLEL_GIL_FREE
    from privsepd.helper import spawn
    from privsepd.helper.monitor import exec_parallel

    assert EXEC_PARALLEL_GIL_FREE > EXEC_PARALLEL
    monkeypatch.setattr(spawn, "AVAILABLE", True)
    assert exec_parallel() == EXEC_PARALLEL_GIL_FREE
    monkeypatch.setattr(spawn, "AVAILABLE", False)  # os.posix_spawn / Popen hold the GIL
    assert exec_parallel() == EXEC_PARALLEL
