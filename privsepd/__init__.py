"""privsepd: run the few privileged things a service needs in a scoped helper.

The public surface is small: :class:`Context` (declare a helper and its
entrypoints), :class:`Files` (the files a helper that is not root may read
and write), :class:`Landlock` (an optional filesystem sandbox),
:func:`ambient_capabilities` (hand capabilities to a program an entrypoint
runs),
:func:`load_policy` (root-owned TOML / rootwrap policy), the start modes
(:class:`ForkMode`, :class:`SpawnMode`, :class:`DaemonMode`) and the error
types.
Heavier names are imported on first use, so ``privsepd-rootwrap`` (which
imports this package) starts without loading msgpack or cffi.
"""

from __future__ import annotations

import os
import sys

# Not typing (~3 ms of privsepd-rootwrap's start-up): the type checker treats
# this name as true.
TYPE_CHECKING = False

# The one place the version is written; setup.cfg reads it (attr:).
__version__ = "0.1.0"


def _no_bytecode_from_a_callers_limits() -> None:
    """Write no .pyc when root runs with a caller's file-size limit or lax umask.

    ``privsepd-rootwrap`` and ``privsepd helper`` run as root through sudo
    with some of the caller's process state. CPython's import system ignores
    a short write, so a .pyc written under a small RLIMIT_FSIZE stays
    truncated in root's cache and breaks that module for every later user;
    under umask 0 it creates world-writable ``__pycache__`` directories, in
    which anyone could plant bytecode that root would then run. (This
    module's own .pyc is written before this runs: install compiled.)
    """
    if os.geteuid() != 0:
        return
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    if int(line.split()[1], 8) & 0o022 != 0o022:
                        sys.dont_write_bytecode = True
                    break
        with open("/proc/self/limits", "rb") as f:
            for line in f:
                if line.startswith(b"Max file size"):
                    if line.split()[3] != b"unlimited":
                        sys.dont_write_bytecode = True
                    break
    except (OSError, IndexError, ValueError):
        sys.dont_write_bytecode = True


_no_bytecode_from_a_callers_limits()

from privsepd.errors import (  # noqa: E402 -- after the bytecode guard above
    AuditError,
    BusyError,
    CallTimeout,
    ConstraintError,
    CrossingError,
    DeniedError,
    HandshakeError,
    HelperDiedError,
    PolicyError,
    PrivsepError,
    ProtocolError,
    RemoteError,
    ScopingError,
    UnknownFunctionError,
    UnsafePolicyError,
)

if TYPE_CHECKING:
    from typing import Any

    from privsepd.context import Context, in_helper
    from privsepd.files import Files
    from privsepd.helper.scoping import Landlock, ambient_capabilities
    from privsepd.modes import DaemonMode, ForkMode, SpawnMode
    from privsepd.policy.loader import load_policy

_LAZY = {
    "Context": "privsepd.context",
    "in_helper": "privsepd.context",
    "Files": "privsepd.files",
    "Landlock": "privsepd.helper.scoping",
    "ambient_capabilities": "privsepd.helper.scoping",
    "load_policy": "privsepd.policy.loader",
    "ForkMode": "privsepd.modes",
    "SpawnMode": "privsepd.modes",
    "DaemonMode": "privsepd.modes",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'privsepd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    "AuditError",
    "BusyError",
    "CallTimeout",
    "ConstraintError",
    "Context",
    "CrossingError",
    "DaemonMode",
    "DeniedError",
    "Files",
    "ForkMode",
    "HandshakeError",
    "HelperDiedError",
    "Landlock",
    "PolicyError",
    "PrivsepError",
    "ProtocolError",
    "RemoteError",
    "ScopingError",
    "SpawnMode",
    "UnknownFunctionError",
    "UnsafePolicyError",
    "ambient_capabilities",
    "in_helper",
    "load_policy",
]
