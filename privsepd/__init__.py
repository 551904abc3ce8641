"""privsepd: run the few privileged things a service needs in a scoped helper."""

from privsepd.errors import (
    CallTimeout,
    ConstraintError,
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

__all__ = [
    "CallTimeout",
    "ConstraintError",
    "DeniedError",
    "HandshakeError",
    "HelperDiedError",
    "PolicyError",
    "PrivsepError",
    "ProtocolError",
    "RemoteError",
    "ScopingError",
    "UnknownFunctionError",
    "UnsafePolicyError",
]
