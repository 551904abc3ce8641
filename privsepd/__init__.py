"""privsepd: run the few privileged things a service needs in a scoped helper.

The public surface is small: :class:`Context` (declare a helper and its
entrypoints), :class:`Landlock` (an optional filesystem sandbox),
:func:`load_policy` (root-owned TOML / rootwrap policy), the start modes
(:class:`ForkMode`, :class:`SpawnMode`, :class:`DaemonMode`) and the error
types.
Heavier names are imported on first use, so ``privsepd-rootwrap`` (which
imports this package) starts without loading msgpack or cffi.
"""

from typing import TYPE_CHECKING, Any

from privsepd.errors import (
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
    from privsepd.context import Context, in_helper
    from privsepd.helper.scoping import Landlock
    from privsepd.modes import DaemonMode, ForkMode, SpawnMode
    from privsepd.policy.loader import load_policy

_LAZY = {
    "Context": "privsepd.context",
    "in_helper": "privsepd.context",
    "Landlock": "privsepd.helper.scoping",
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
    "BusyError",
    "CallTimeout",
    "ConstraintError",
    "Context",
    "CrossingError",
    "DaemonMode",
    "DeniedError",
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
    "in_helper",
    "load_policy",
]
