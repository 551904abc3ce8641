"""A real path-swapping attacker for race tests.

:class:`Swapper` forks a process that, as an ordinary user, exchanges two
directory entries with ``renameat2(RENAME_EXCHANGE)`` in a tight loop: a
real directory and a symlink pointing somewhere the user may not go. Any
check that resolves a path and lets something else resolve it again later
loses to it a few percent of the time; a check that holds on to what it
resolved never does.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import time
from pathlib import Path

# renameat2 is not in the asm-generic table at the same number everywhere.
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347}
RENAME_EXCHANGE = 1 << 1
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def renameat2_number() -> int:
    machine = platform.machine()
    if machine not in _SYS_RENAMEAT2:
        raise RuntimeError(f"renameat2 syscall number unknown for {machine}")
    return _SYS_RENAMEAT2[machine]


def exchange(a: str, b: str) -> None:
    """Atomically swap two directory entries (renameat2 RENAME_EXCHANGE)."""
    rc = _libc.syscall(
        ctypes.c_long(renameat2_number()),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(a)),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(b)),
        ctypes.c_uint(RENAME_EXCHANGE),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)


class Swapper:
    """A forked process (as ``uid``) swapping ``a`` and ``b`` until stopped."""

    def __init__(self, a: str | Path, b: str | Path, uid: int | None = None) -> None:
        self.a, self.b, self.uid = str(a), str(b), uid
        self.pid = 0

    def __enter__(self) -> Swapper:
        exchange(self.a, self.b)  # fails loudly here if the kernel lacks it
        exchange(self.a, self.b)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(r)
                if self.uid is not None:
                    os.setgroups([])
                    os.setresgid(self.uid, self.uid, self.uid)
                    os.setresuid(self.uid, self.uid, self.uid)
                os.write(w, b"go")
                os.close(w)
                a, b = self.a, self.b
                while True:
                    exchange(a, b)
            finally:
                os._exit(1)
        os.close(w)
        ready = os.read(r, 2)
        os.close(r)
        if ready != b"go":
            os.waitpid(pid, 0)
            raise RuntimeError("swapper did not start")
        self.pid = pid
        time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        # Leave the tree as it was found: the real directory at ``a``.
        if os.path.islink(self.a):
            exchange(self.a, self.b)


ATTACKER_UID = 4242
SECRET = b"SECRET-shadow-contents"
HARMLESS = b"harmless\n"


def build_tree(root: Path, uid: int = ATTACKER_UID) -> dict[str, Path]:
    """root/secret/shadow (root 0700/0600) and root/base owned by ``uid`` with
    base/d/shadow (a harmless file) and base/l -> root/secret.

    Swapping base/d and base/l turns base/d/shadow into the secret file.
    """
    secret = root / "secret"
    secret.mkdir(mode=0o700)
    (secret / "shadow").write_bytes(SECRET)
    (secret / "shadow").chmod(0o600)
    base = root / "base"
    base.mkdir(mode=0o755)
    d = base / "d"
    d.mkdir(mode=0o755)
    (d / "shadow").write_bytes(HARMLESS)
    (d / "shadow").chmod(0o644)
    link = base / "l"
    link.symlink_to(secret)
    for p in (base, d, d / "shadow", link):
        os.lchown(p, uid, uid)
    return {"secret": secret, "base": base, "d": d, "link": link, "target": d / "shadow"}
