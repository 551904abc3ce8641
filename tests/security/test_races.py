"""Red team, path races: swap a directory for a symlink while privsepd checks a path.

The service user owns a directory covered by ``path_under``. Inside it, ``d``
is a real directory holding a decoy ``shadow`` and ``l`` is a symlink to
``/etc``; a process running as that user swaps the two names with
``renameat2(RENAME_EXCHANGE)`` in a loop (on its own CPU, a log-uniform
random dwell between swaps). Every path privsepd judges is
``SHARE/d/shadow``: under SHARE when ``d`` is the directory, ``/etc/shadow``
when it is the link. A check that resolves the path and then lets a command
or an entrypoint open the *name* again reads ``/etc/shadow`` in a fraction
of the attempts that got past the check. Each test fails at the first leak;
without one it must have seen both a decoy read and a refusal (the race
really ran both ways), then the usual three assertions follow.

Detection rate (a failing run = the leak was caught), measured on this
2-CPU box under the other engineers' load (load average 4-6):

=====================================  =====  ============  ============  ===========
test                                   reads  vulnerable    reintroduced  q (leaks per
                                              main f9e3c25  bug (*)       passed check)
=====================================  =====  ============  ============  ===========
command ``path_under`` argument        20     50/50 (**)    40/40         0.31-0.41
command ``rest = {path_under}``        20     50/50 (**)    40/40         0.29-0.48
entrypoint ``PathUnder.open``          200    49/50 (**)    100/100       0.01-0.56
rootwrap ``PathFilter``                8      50/50 (**)    40/40         0.50-0.75
=====================================  =====  ============  ============  ===========

(*) main after the sec-paths merge with its guard broken by hand: the
command given the judged name instead of the pinned ``/proc/self/fd/N``
(``paths.pin_command``), ``PathUnder.open_fd`` opening ``resolve()``'s
result. (**) earlier settings of the same tests (a fixed 600-1000
attempts; for the entrypoint, ``resolve()`` + ``open()``, what the docs
advised before sec-paths). With the lowest q measured, a run misses the
leak with a chance below 0.1% (commands) and 0.4% (rootwrap); the
entrypoint's window is a few microseconds of Python and its q swings with
the load, hence 200 reads while the swapper keeps up. Against the fixed
code the module takes 6-14 s here (rootwrap: each attempt is a whole
``privsepd-rootwrap`` run).
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import random
import signal
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import needs_inheritable_o_path

from privsepd import DeniedError
from privsepd.constraints import PathUnder

from . import entrypoints
from .attack import argv_has, rename_exchange

NOBODY = 65534


@pytest.fixture
def share(trusted_dir) -> Path:
    """SHARE (owned by the service user) with d/ (decoy) and l -> /etc."""
    base = trusted_dir / "share"
    base.mkdir(mode=0o755)
    (base / "d").mkdir(mode=0o755)
    (base / "d" / "shadow").write_text("decoy\n")
    (base / "l").symlink_to("/etc")
    for path in (base, base / "d", base / "d" / "shadow"):
        os.chown(path, NOBODY, NOBODY)
    os.lchown(base / "l", NOBODY, NOBODY)
    return base


#: The swapper and the process it races run on different CPUs, so the swap
#: lands inside the checker's window rather than only when it blocks.
PR_SET_TIMERSLACK = 29


def cpus_allowed() -> set[int]:
    """The calling thread's CPUs (PyPy 3.9's os has no sched_getaffinity: /proc tells)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    with open("/proc/thread-self/status") as f:
        spec = next(line for line in f if line.startswith("Cpus_allowed_list:")).split()[1]
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def set_cpus(task: int, cpus: set[int]) -> None:
    """sched_setaffinity(2) for one task (0: the caller); taskset(1) where os lacks it."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(task, cpus)
        return
    tid = task or threading.get_native_id()
    done = subprocess.run(
        ["taskset", "-p", "-c", ",".join(map(str, sorted(cpus))), str(tid)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if not os.path.exists(f"/proc/{tid}"):
            raise ProcessLookupError(tid)
        raise OSError(f"taskset {tid}: {done.stderr.strip()}")


SWAPPER_CPU = max(cpus_allowed())
TARGET_CPU = min(cpus_allowed())


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` (0: the caller) to ``cpu``; children inherit it."""
    tasks = [pid] if pid == 0 else [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for task in tasks:
        try:
            set_cpus(task, {cpu})
        except ProcessLookupError:
            pass


class Swapper:
    """The service user swapping d and l as fast as it can, in a child process.

    ``swaps`` (shared memory) counts completed exchanges, so a test can show
    the race really ran rather than pass because nothing moved.
    """

    def __init__(
        self, share: Path, dwell: tuple[float, float] = (1e-4, 1e-3), nice: int = -19
    ) -> None:
        self.share = share
        self.nice = nice
        self.dwell = (math.log10(dwell[0]), math.log10(dwell[1]))
        self._count = mmap.mmap(-1, 8)
        self.pid = 0

    @property
    def swaps(self) -> int:
        return struct.unpack_from("Q", self._count)[0]

    def __enter__(self) -> Swapper:
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the swapper
            try:
                pin(0, SWAPPER_CPU)
                os.nice(self.nice)  # still root here: the race must not lose the CPU to load
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                a, b = str(self.share / "d"), str(self.share / "l")
                count, n, rng, clock = self._count, 0, random.Random(), time.perf_counter
                lo, hi = self.dwell
                libc = ctypes.CDLL(None)
                libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # sleep to the microsecond
                os.write(ready_w, b"!")
                while True:
                    rename_exchange(a, b)
                    n += 1
                    struct.pack_into("Q", count, 0, n)
                    # Dwell a log-uniform time in ``dwell``: long enough that
                    # the check mostly sees one state, short enough that the
                    # state often changes before the name is used again.
                    # Short dwells spin, long ones sleep (and leave the CPU
                    # to the rest of the box).
                    dwell = 10 ** rng.uniform(lo, hi)
                    if dwell > 5e-5:
                        time.sleep(dwell)
                        continue
                    end = clock() + dwell
                    while clock() < end:
                        pass
            finally:
                os._exit(0)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"!", "the swapper did not start"
        os.close(ready_r)
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        if (self.share / "d").is_symlink():  # leave d as the directory
            rename_exchange(str(self.share / "d"), str(self.share / "l"))


def race(
    share: Path,
    attempt: Callable[[str], bytes | None],
    reads: int,
    dwell: tuple[float, float],
    cap: int,
    nice: int = -19,
    swaps_per_attempt: int = 0,
) -> Counter:
    """Run ``attempt(SHARE/d/shadow)`` while swapping; fail at the first leak.

    ``attempt`` returns what was read, or None when privsepd refused. A leak
    can only follow a check that passed, so the race runs until ``reads``
    attempts got past the check (each then leaks with a fair chance on
    vulnerable code) and the swapper kept up ``swaps_per_attempt`` swaps per
    attempt (a starved swapper races nothing), at most ``cap`` attempts.
    Without a leak, the attempts must have met both states (a decoy read and
    a refusal): else the race did not run. This process runs on the target's
    CPU meanwhile, away from the swapper.
    """
    target = str(share / "d" / "shadow")
    seen: Counter = Counter()
    cpus = cpus_allowed()
    pin(0, TARGET_CPU)
    try:
        with Swapper(share, dwell, nice) as swapper:
            for i in range(cap):
                got = attempt(target)
                if got is not None and b"root:" in got:
                    raise AssertionError(f"ATTACK SUCCEEDED: /etc/shadow read on attempt {i + 1}")
                seen["refused" if got is None else "decoy" if got == b"decoy\n" else "other"] += 1
                enough = swapper.swaps >= swaps_per_attempt * (i + 1)
                if seen["decoy"] >= reads and seen["refused"] and enough:
                    break
            swaps = swapper.swaps
    finally:
        set_cpus(0, cpus)
    assert swaps >= 10 and seen["decoy"] >= reads and seen["refused"], (swaps, seen)
    return seen


def denied_is_none(action: Callable[[], bytes]) -> bytes | None:
    try:
        return action()
    except DeniedError:
        return None


def cat_through(target) -> Callable[[str], bytes | None]:
    """``ctx.execute(["cat", path])``: its output, or None when denied."""
    return lambda path: denied_is_none(lambda: target.execute(["cat", path])[1])


def share_rule(share: Path, args: str) -> str:
    return (
        f'\n[[command]]\ncontext = "t-sec"\nname = "cat-share"\nexec = "/bin/cat"\n'
        f'args = {args}\nrun_as = "nobody"\ncapabilities = ["CAP_DAC_READ_SEARCH"]\n'
    ).replace("SHARE", str(share))


@needs_inheritable_o_path
def test_fork_command_path_under_argument_holds_while_its_directory_is_swapped(targets, share):
    fork = targets.open("fork", extra_policy=share_rule(share, '[{ path_under = "SHARE" }]'))
    fork.good_call()
    pin(fork.client().helper_pid, TARGET_CPU)
    race(share, cat_through(fork), reads=20, dwell=(1e-4, 1e-3), cap=2000)
    fork.good_call()
    fork.audit.expect(event="command", decision="allow", argv=argv_has("cat"))


@needs_inheritable_o_path
def test_fork_command_rest_path_under_arguments_hold_while_swapped(targets, share):
    rule = share_rule(share, '[{ rest = { path_under = "SHARE" } }]')
    fork = targets.open("fork", extra_policy=rule)
    fork.good_call()
    pin(fork.client().helper_pid, TARGET_CPU)
    race(share, cat_through(fork), reads=20, dwell=(1e-4, 1e-3), cap=2000)
    fork.good_call()
    fork.audit.expect(event="command", decision="allow", argv=argv_has("cat"))


def test_fork_entrypoint_resolving_as_documented_holds_while_swapped(targets, share, monkeypatch):
    monkeypatch.setattr(entrypoints, "BENEATH", PathUnder(str(share), must_exist=True))
    fn = '\n[[function]]\ncontext = "t-sec"\nname = "security.entrypoints:read_beneath"\n'
    fork = targets.open("fork", extra_policy=fn + "args.path = { str = true }\n")
    fork.good_call()  # forks the helper with BENEATH set
    pin(fork.client().helper_pid, TARGET_CPU)

    def read(path: str) -> bytes | None:
        try:
            return fork.call("read_beneath", path)
        except (DeniedError, OSError):
            return None

    # The window is a few microseconds of Python between the check and the
    # open: many cheap attempts (the swapper at normal priority, so the
    # helper is not starved), and only while the swapper keeps swapping.
    race(share, read, reads=200, dwell=(1e-6, 1e-5), cap=12000, nice=0, swaps_per_attempt=10)
    fork.good_call()
    fork.audit.expect(decision="allow", name=":read_beneath")


def test_rootwrap_path_filter_holds_while_its_directory_is_swapped(targets, share):
    shim = targets.rootwrap(f"cat_share: PathFilter, /bin/cat, root, {share}\n")
    shim.good_call()
    pin(shim.runner_pid(), TARGET_CPU)  # the shims it starts inherit the CPU

    def run(path: str) -> bytes | None:
        result = shim.run("cat", path)
        # A refusal is oslo's 99; a traceback is a crash of the root shim (NEW:
        # realpath's readlink raises EINVAL mid-swap), which must not pass either.
        assert b"Traceback" not in result.stderr, result.stderr.decode()[-300:]
        return None if result.returncode == 99 else result.stdout

    race(share, run, reads=8, dwell=(2e-3, 1e-2), cap=120)
    shim.good_call()
    shim.audit.expect(decision="allow", argv=argv_has("cat", str(share)))
