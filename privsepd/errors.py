"""Exception types shared by every piece of privsepd.

Each type names one cause, so callers (and audit records) can tell a policy
denial from a dead helper from a protocol violation without parsing messages.
"""

from __future__ import annotations


class PrivsepError(Exception):
    """Base class of every error privsepd raises on purpose."""


class ProtocolError(PrivsepError):
    """A frame broke the channel protocol (malformed, oversize, wrong version).

    Received from the peer, it closes the connection: after that neither side
    can trust the byte stream. Raised while *encoding* a request (a value
    that cannot cross, a frame over the limit), nothing was sent and the
    connection stays usable.
    """


class CrossingError(ProtocolError):
    """A value cannot cross the channel: not msgpack-native, too deep, too long,
    an int beyond 64 bits, or a frame over the context's ``max_frame``.

    ``side`` says whose value it was: ``"argument"`` (raised before anything
    is sent) or ``"result"`` (the helper ran the call, but its return value
    could not come back). Either way the connection stays usable.
    """

    def __init__(self, message: str, side: str = "argument") -> None:
        super().__init__(message)
        self.side = side


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


class BusyError(CallTimeout):
    """A call was not sent: its entrypoint's abandoned calls still fill the helper.

    A call that times out keeps running in the helper (a thread cannot be
    stopped from outside). The client counts these abandoned calls per
    entrypoint and per helper; past the limit, new calls to that entrypoint
    wait up to their own timeout for one to finish, then raise this error.
    Nothing of the refused call reached the helper.
    """


class ScopingError(PrivsepError):
    """The helper could not reach, or could not prove, its declared scope."""


# ------------------------------------------------------- crossing the channel

_BUILTIN_ALLOWED: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        ArithmeticError,
        AssertionError,
        BlockingIOError,
        ChildProcessError,
        ConnectionError,
        FileExistsError,
        FileNotFoundError,
        IndexError,
        InterruptedError,
        IsADirectoryError,
        KeyError,
        LookupError,
        NotADirectoryError,
        NotImplementedError,
        OSError,
        OverflowError,
        PermissionError,
        ProcessLookupError,
        RuntimeError,
        TimeoutError,
        TypeError,
        UnicodeError,
        ValueError,
        ZeroDivisionError,
    )
}

_PRIVSEPD_ALLOWED: dict[str, type[PrivsepError]] = {
    cls.__name__: cls
    for cls in (
        PrivsepError,
        DeniedError,
        UnknownFunctionError,
        ConstraintError,
        PolicyError,
        CallTimeout,
        BusyError,
        ScopingError,
        CrossingError,
    )
}


_STRUCTURED_FIELDS: dict[type, tuple[str, ...]] = {
    ConstraintError: ("argument", "rule"),
    PolicyError: ("path", "line", "reason"),
}


def exception_to_wire(exc: BaseException) -> tuple[str, str, int | None]:
    """Describe an exception as (type name, message, errno) for the channel.

    Only the name travels, never the class: the receiving side maps it back
    through a fixed allowlist, so no peer can make the other import anything.
    """
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        # str(KeyError('k')) is "'k'": send the key's text, not its repr.
        return "KeyError", str(exc.args[0]), None
    if isinstance(exc, OSError) and not isinstance(exc, PrivsepError):
        message = exc.strerror or str(exc)
        if exc.filename is not None:
            message = f"{message}: {exc.filename!r}"
        return type(exc).__name__, message, exc.errno
    return type(exc).__name__, str(exc), None


def exception_from_wire(type_name: str, message: str, errno: int | None) -> Exception:
    """Rebuild an allowlisted exception, or a RemoteError for anything else."""
    cls = _PRIVSEPD_ALLOWED.get(type_name)
    if cls is not None:
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        # Structured fields do not cross; keep the attributes defined so
        # that code reading them gets None rather than AttributeError.
        for attr in _STRUCTURED_FIELDS.get(cls, ()):
            setattr(exc, attr, None)
        if cls is PolicyError:
            exc.reason = message
        if isinstance(exc, CrossingError):
            exc.side = "result"  # only the helper's replies carry it
        return exc
    builtin = _BUILTIN_ALLOWED.get(type_name)
    if builtin is None:
        return RemoteError(type_name, message)
    if issubclass(builtin, OSError) and errno is not None:
        exc = builtin(errno, message)
        return exc
    return builtin(message)
