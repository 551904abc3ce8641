"""``ctx.execute`` under load: concurrent callers, timeouts, and what stays behind.

A real helper; what it holds is read from ``/proc/PID`` (its descriptors
and its child processes), never from its own bookkeeping.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time

import pytest

from privsepd import CallTimeout
from privsepd.context import Context
from privsepd.helper.execute import runner_factory
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import parse_filters

FILTERS = """
[Filters]
sh: CommandFilter, /bin/sh, root
true: CommandFilter, /bin/true, root
"""


@pytest.fixture
def ctx(root):
    index = FilterIndex(parse_filters(textwrap.dedent(FILTERS), "t.filters"), ["/bin", "/usr/bin"])
    ctx = Context("t-exec-load", stay_root=True, command_runner=runner_factory(index))
    assert ctx.execute(["true"])[0] == 0  # helper up
    yield ctx
    ctx.stop()


def descriptors(pid: int) -> list[str]:
    """What each of ``pid``'s descriptors is, sorted (``pipe:[...]``, paths, sockets)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except FileNotFoundError:
            pass
    return sorted(out)


def children(pid: int) -> list[int]:
    """Live and zombie child processes of ``pid`` (all its threads)."""
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return kids


def settled(check, seconds: float = 5.0):
    """``check()`` once it is falsy, or its last value after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def test_concurrent_commands_each_get_their_own_exit_code_and_output(ctx):
    script = 'echo "out $1"; echo "err $1" >&2; exit $(($1 % 7))'
    results: dict[int, tuple[int, bytes, bytes]] = {}
    errors: list[BaseException] = []

    def caller(t: int) -> None:
        try:
            for k in range(25):
                i = t * 100 + k
                results[i] = ctx.execute(["sh", "-c", script, "sh", str(i)])
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = {
        t * 100 + k: (
            (t * 100 + k) % 7,
            f"out {t * 100 + k}\n".encode(),
            f"err {t * 100 + k}\n".encode(),
        )
        for t in range(8)
        for k in range(25)
    }
    assert results == expected


def test_a_command_outliving_its_timeout_is_killed_and_reaped(ctx, trusted_dir):
    pidfile = trusted_dir / "pid"
    start = time.monotonic()
    with pytest.raises(CallTimeout, match="timed out after 0.5s"):
        ctx.execute(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=0.5)
    assert time.monotonic() - start < 5.0  # the caller was not held by the command
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}")  # killed and waited for: not even a zombie
    assert children(ctx.helper_pid) == []
    assert ctx.execute(["true"])[0] == 0  # the helper serves on


def test_timed_out_commands_from_many_callers_are_all_killed_and_reaped(ctx):
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            ctx.execute(["sh", "-c", "exec sleep 60"], timeout=0.3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [type(e) for e in errors] == [CallTimeout] * 6
    assert children(ctx.helper_pid) == []


def test_a_thousand_commands_leave_no_zombie_and_no_descriptor_behind(ctx):
    helper = ctx.helper_pid
    before = descriptors(helper)

    def caller() -> None:
        for _ in range(250):
            assert ctx.execute(["true"]) == (0, b"", b"")

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert children(helper) == []
    assert settled(lambda: descriptors(helper) != before) is False
    assert descriptors(helper) == before
