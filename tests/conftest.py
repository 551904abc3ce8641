"""Shared test helpers.

Tests that need root or a kernel feature call :func:`require_root` /
:func:`require_feature`. Outside CI they skip with a reason; with
``PRIVSEPD_REQUIRE_ROOT=1`` (set by ``.ci/run``) they fail instead, so a CI
machine that lacks the feature can never pass by skipping.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

REQUIRE_ROOT = os.environ.get("PRIVSEPD_REQUIRE_ROOT") == "1"

# CI gates a landing: its hypothesis runs are derandomized (the same examples
# every run, no example database), so a red build always reproduces.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def in_child(fn: Callable[[], Any]) -> Any:
    """Run *fn* in a forked child (it may drop privileges, seccomp, ...) and
    return its JSON-encodable result; an exception in the child fails the test."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            try:
                out = {"ok": fn()}
            except BaseException as e:
                out = {"error": repr(e)}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    buf = b""
    while chunk := os.read(r, 65536):
        buf += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(buf)
    assert "error" not in out, out["error"]
    return out["ok"]


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict: the kernel's own word on a process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def require_root() -> None:
    if os.geteuid() != 0:
        msg = "test needs root (real capabilities, chown, setuid)"
        if REQUIRE_ROOT:
            pytest.fail(msg + " but PRIVSEPD_REQUIRE_ROOT=1")
        pytest.skip(msg)


def require_feature(available: bool, what: str) -> None:
    if not available:
        msg = f"kernel feature missing: {what}"
        if REQUIRE_ROOT:
            pytest.fail(msg + " but PRIVSEPD_REQUIRE_ROOT=1")
        pytest.skip(msg)


@pytest.fixture
def root() -> None:
    """Use as a fixture argument to mark a test as needing root."""
    require_root()


_TRUSTED_BASES = ("/run", "/var/lib", "/root")


@pytest.fixture
def trusted_dir(root):
    """A fresh root-owned 0755 directory whose whole chain up to / is trusted.

    pytest's tmp_path lives under world-writable /tmp (refused by the policy
    trust check) and under a 0700 directory (untraversable by a helper that
    dropped to nobody), so tests of either use this instead.
    """
    from privsepd.errors import PolicyError
    from privsepd.policy.trust import check_trusted

    for base in _TRUSTED_BASES:
        try:
            check_trusted(base)
        except PolicyError:
            continue
        path = Path(tempfile.mkdtemp(prefix="privsepd-test-", dir=base))
        path.chmod(0o755)
        try:
            yield path
        finally:
            shutil.rmtree(path)
        return
    pytest.fail(f"no root-owned, non-writable base directory among {_TRUSTED_BASES}")


def write_rootwrap_conf(
    base: Path, filters: str, defaults: str = "exec_dirs=/bin,/usr/bin\n"
) -> str:
    """``base``/rootwrap.conf (its [DEFAULT] is ``defaults``) and one filters
    file, ``base``/filters.d/test.filters (``filters``, dedented), both 0644.

    ``base`` must be trusted (the ``trusted_dir`` fixture). Returns the
    conf's path.
    """
    import textwrap

    filters_dir = base / "filters.d"
    filters_dir.mkdir(mode=0o755)
    (filters_dir / "test.filters").write_text(textwrap.dedent(filters))
    conf = base / "rootwrap.conf"
    conf.write_text(f"[DEFAULT]\nfilters_path={filters_dir}\n{defaults}")
    for path in (filters_dir / "test.filters", conf):
        path.chmod(0o644)
    return str(conf)


def unix_listening(path: object) -> bool:
    """A Unix socket at ``path`` is in listen() state.

    Read from /proc/net/unix rather than probed with a connect: the socket
    file exists a moment before listen() runs, and a probe connection would
    use up one of the peer's helpers in the daemon.
    """
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & 0x10000:
                return True
    return False


def wait_listening(path: object, proc: Any, timeout: float = 10.0) -> None:
    """Wait until the daemon ``proc`` listens on ``path``; fail with its stderr if it dies."""
    deadline = time.monotonic() + timeout
    while not unix_listening(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"daemon did not start listening on {path}: {err}")
        time.sleep(0.02)


# PyPy 3.9's os module has no posix_spawn (nor POSIX_SPAWN_*), which
# ctx.execute, spawn mode and privsepd-rootwrap use to start programs.
needs_posix_spawn = pytest.mark.skipif(
    not hasattr(os, "posix_spawn"),
    reason="this interpreter's os module has no posix_spawn (PyPy 3.9): ctx.execute, "
    "spawn mode and privsepd-rootwrap start programs with it",
)

# PyPy 3.9 cannot make an O_PATH descriptor inheritable (its set_inheritable
# uses ioctl(FIONCLEX), which O_PATH descriptors refuse with EBADF).
needs_inheritable_o_path = pytest.mark.skipif(
    platform.python_implementation() == "PyPy",
    reason="PyPy 3.9 cannot make an O_PATH descriptor inheritable (ioctl FIONCLEX: EBADF), "
    "which a pinned path needs to reach a command",
)
# Lifecycle tests whose load, timing or memory thresholds are calibrated on
# CPython: PyPy 3.9's channel does 0.29x CPython's calls under 8 threads
# (bench/RESULTS.md), its collector keeps freed memory, and it opens other
# descriptors at start. The behaviour they guard is tested on every CPython.
cpython_calibrated = pytest.mark.skipif(
    platform.python_implementation() == "PyPy",
    reason="load/timing/memory thresholds calibrated on CPython (PyPy 3.9: 0.29x the "
    "8-thread call rate, a collector that keeps freed memory)",
)

# python-prctl is CPython-only (its C extension does not import on PyPy).
needs_python_prctl = pytest.mark.skipif(
    importlib.util.find_spec("prctl") is None,
    reason="python-prctl is not installed (CPython-only: it does not import on PyPy)",
)
# PyPy builds its standard library's C modules in: no extension module file to copy.
needs_stdlib_extension_modules = pytest.mark.skipif(
    platform.python_implementation() == "PyPy",
    reason="PyPy has its standard library's C modules built in: no stdlib extension "
    "module file exists to copy",
)
_TRUSTED_COPIES: dict[str, Path] = {}


def trusted_tree(source: Path) -> Path:
    """``source`` itself when it passes the policy trust check, else a root-owned copy.

    Tests hand their own service modules to a daemon or spawned helper, which
    imports only trust-checked files. A checkout under /tmp (CI clones
    anywhere) is refused, as it should be; the copy lives under a trusted
    base for the rest of the session.
    """
    from privsepd.errors import PolicyError
    from privsepd.policy.trust import check_trusted

    try:
        check_trusted(str(source))
        return source
    except PolicyError:
        pass
    key = str(source)
    if key not in _TRUSTED_COPIES:
        for base in _TRUSTED_BASES:
            try:
                check_trusted(base)
            except PolicyError:
                continue
            top = Path(tempfile.mkdtemp(prefix="privsepd-test-tree-", dir=base))
            top.chmod(0o755)
            atexit.register(shutil.rmtree, top, True)
            copy = top / source.name
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
            for path in [copy, *copy.rglob("*")]:
                os.lchown(path, 0, 0)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode & ~0o022)
            _TRUSTED_COPIES[key] = copy
            break
        else:
            pytest.fail(f"no root-owned, non-writable base directory among {_TRUSTED_BASES}")
    return _TRUSTED_COPIES[key]
