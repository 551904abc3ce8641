"""Exception types shared by every piece of privsepd.

Each type names one cause, so callers (and audit records) can tell a policy
denial from a dead helper from a protocol violation without parsing messages.
"""

from __future__ import annotations


class PrivsepError(Exception):
    """Base class of every error privsepd raises on purpose."""


class ProtocolError(PrivsepError):
    """A frame broke the channel protocol (malformed, oversize, wrong version).

    The connection that produced it is closed: after a protocol error neither
    side can trust the byte stream any more.
    """


class HandshakeError(ProtocolError):
    """The peers disagree on magic, protocol version or context name."""


class PolicyError(PrivsepError):
    """A policy file could not be loaded; the message names file and line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.reason = message


class UnsafePolicyError(PolicyError):
    """A policy file or one of its directories is not safe to trust.

    Raised when it is not owned by root or is writable by group/others: such
    a file could be edited by the very service it is meant to constrain.
    """


class DeniedError(PrivsepError, PermissionError):
    """Policy refused a call or command; the message says which rule failed."""


class UnknownFunctionError(DeniedError):
    """The client asked for a function the helper's fixed table does not hold."""


class ConstraintError(DeniedError):
    """An argument failed its declared constraint."""

    def __init__(self, argument: str, rule: str, detail: str = ""):
        msg = f"argument {argument!r} fails {rule}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
        self.argument = argument
        self.rule = rule


class RemoteError(PrivsepError):
    """The helper raised an exception whose type may not cross the channel."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message


class HelperDiedError(PrivsepError):
    """The helper went away while calls were in flight; those calls are lost."""


class CallTimeout(PrivsepError, TimeoutError):
    """A call got no reply within its timeout."""


class ScopingError(PrivsepError):
    """The helper could not reach, or could not prove, its declared scope."""
