"""Real users and groups for tests (useradd/groupadd), removed afterwards.

Several test runs may share a machine: every name carries the pid, and a
locked /etc/passwd (another useradd running) is retried.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
import time
from collections.abc import Iterator


def _run(argv: list[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode == 0:
            return
        # 1: cannot update the password file (locked); 10: cannot update group file
        if "lock" not in proc.stderr.lower() or time.monotonic() > deadline:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
        time.sleep(0.1)


def unique(prefix: str) -> str:
    """A short account name unique to this test run."""
    return f"{prefix}{os.getpid() % 100000}"


@contextlib.contextmanager
def system_group(name: str, *options: str) -> Iterator[grp.struct_group]:
    _run(["groupadd", *options, name])
    try:
        yield grp.getgrnam(name)
    finally:
        _run(["groupdel", "-f", name])


@contextlib.contextmanager
def system_user(name: str, *options: str) -> Iterator[pwd.struct_passwd]:
    """``useradd -M -s nologin OPTIONS NAME``; ``userdel -f`` afterwards (uid 0 aliases too)."""
    _run(["useradd", "-M", "-s", "/usr/sbin/nologin", *options, name])
    try:
        yield pwd.getpwnam(name)
    finally:
        _run(["userdel", "-f", name])
