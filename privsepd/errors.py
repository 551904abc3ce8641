"""Exception types shared by every piece of privsepd.

Each type names one cause, so callers (and audit records) can tell a policy
denial from a dead helper from a protocol violation without parsing messages.
"""

from __future__ import annotations

from privsepd._record import record

# typing costs privsepd-rootwrap ~3 ms of start-up; annotations only need it
# for the type checker (which treats this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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


class AuditError(PrivsepError):
    """The audit sink could not be opened, or refused a record.

    At start this stops the helper (or daemon, or rootwrap) from serving; for
    a call it means the call was refused, since nothing may run unrecorded.
    """


# ------------------------------------------------------- crossing the channel

_BUILTIN_ALLOWED: dict[str, type[Exception]] = {
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
        UnsafePolicyError,
        CallTimeout,
        BusyError,
        ScopingError,
        AuditError,
        CrossingError,
    )
}


_STRUCTURED_FIELDS: dict[type, tuple[str, ...]] = {
    ConstraintError: ("argument", "rule"),
    PolicyError: ("path", "line", "reason"),
    UnsafePolicyError: ("path", "line", "reason"),
}


def exception_to_wire(exc: BaseException) -> tuple[Any, ...]:
    """Describe an exception as (type name, message, errno, detail) for the channel.

    Only names travel, never the class: the receiving side maps the type
    name back through a fixed allowlist, so no peer can make the other
    import anything. ``detail`` (:func:`exception_detail`) says where the
    class lives and carries its arguments and plain attributes, for a
    client that chooses to re-create it (the oslo.privsep compat layer).
    """
    detail = exception_detail(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        # str(KeyError('k')) is "'k'": send the key's text, not its repr.
        return "KeyError", str(exc.args[0]), None, detail
    if isinstance(exc, OSError) and not isinstance(exc, PrivsepError):
        message = exc.strerror or str(exc)
        if exc.filename is not None:
            message = f"{message}: {exc.filename!r}"
        return type(exc).__name__, message, exc.errno, detail
    return type(exc).__name__, str(exc), None, detail


# -- the detail of an exception: where its class lives, its args, its attributes
#
# Built on the privileged side by reading the exception object only: no
# import, no repr of foreign objects beyond str(). Bounded so that one
# exception costs at most DETAIL_BUDGET bytes of payload however large its
# arguments (a command's stderr, say) are.

DETAIL_MAX_NAME = 200
DETAIL_MAX_ARGS = 8
DETAIL_MAX_ATTRS = 16
DETAIL_MAX_ITEMS = 64  # per list/dict inside an argument or attribute
DETAIL_MAX_DEPTH = 3
DETAIL_MAX_STR = 16 * 1024  # one str/bytes value, longer ones are cut
DETAIL_BUDGET = 64 * 1024
_SCALARS = (bool, int, float, str, bytes)


if TYPE_CHECKING:
    from typing import NamedTuple

    class _RemoteDetailFields(NamedTuple):
        module: str
        qualname: str
        args: list[Any]
        attrs: dict[str, Any]

else:
    _RemoteDetailFields = record("RemoteDetail", ("module", "qualname", "args", "attrs"))


class RemoteDetail(_RemoteDetailFields):
    """Where a remote exception's class lives, its args and plain attributes."""

    __slots__ = ()


class _Skip(Exception):
    pass


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, n: int) -> None:
        if n > self.left:
            raise _Skip
        self.left -= n


def _plain(value: Any, budget: _Budget, depth: int = 0) -> Any:
    """``value`` as msgpack-native data within the budget, or raise _Skip."""
    if value is None:
        budget.take(1)
        return None
    if isinstance(value, _SCALARS):
        # Subclasses (IntEnum codes, str subclasses) cross as their base type.
        if isinstance(value, bool):
            value = bool(value)
        elif isinstance(value, int):
            value = int(value)
            if not -(2**63) <= value < 2**64:
                raise _Skip
        elif isinstance(value, float):
            value = float(value)
        elif isinstance(value, str):
            value = str.__str__(value)[:DETAIL_MAX_STR]
        else:
            value = bytes(value[:DETAIL_MAX_STR])
        budget.take(9 + (len(value) if isinstance(value, (str, bytes)) else 0))
        return value
    if depth >= DETAIL_MAX_DEPTH:
        raise _Skip
    if isinstance(value, (list, tuple)):
        if len(value) > DETAIL_MAX_ITEMS:
            raise _Skip
        budget.take(5)
        return [_plain(item, budget, depth + 1) for item in value]
    if isinstance(value, dict):
        if len(value) > DETAIL_MAX_ITEMS:
            raise _Skip
        budget.take(5)
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Skip
            out[_plain(key, budget, depth + 1)] = _plain(item, budget, depth + 1)
        return out
    raise _Skip


def _is_dotted_name(name: object) -> bool:
    return (
        type(name) is str
        and 0 < len(name) <= DETAIL_MAX_NAME
        and all(part.isidentifier() for part in name.split("."))
    )


def exception_detail(exc: BaseException) -> list[Any] | None:
    """``[module, qualname, args, attrs]`` of ``exc``, bounded; None if not worth sending.

    privsepd's own errors cross by name already. An argument that is not
    plain data crosses as its ``str()``; an attribute that is not plain data
    (or any that would overflow the budget) is left out.
    """
    if isinstance(exc, PrivsepError):
        return None
    cls = type(exc)
    module, qualname = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    if not (_is_dotted_name(module) and _is_dotted_name(qualname)):
        return None  # e.g. a class defined in a function ("<locals>")
    budget = _Budget(DETAIL_BUDGET - len(str(module)) - len(str(qualname)))
    args = []
    for arg in exc.args[:DETAIL_MAX_ARGS]:
        try:
            args.append(_plain(arg, budget))
        except _Skip:
            try:
                args.append(_plain(str(arg)[:256], budget))
            except Exception:
                args.append(None)
    attrs: dict[str, Any] = {}
    candidates: list[tuple[str, Any]] = []
    if isinstance(exc, OSError):
        candidates += [("filename", exc.filename), ("filename2", exc.filename2)]
    try:
        candidates += list(vars(exc).items())
    except TypeError:
        pass
    for name, value in candidates:
        if len(attrs) >= DETAIL_MAX_ATTRS:
            break
        if type(name) is not str or not name.isidentifier() or name.startswith("_"):
            continue
        if value is None and name.startswith("filename"):
            continue
        try:
            attrs[name] = _plain(value, budget)
        except _Skip:
            continue
    return [module, qualname, args, attrs]


def exception_from_wire(
    type_name: str, message: str, errno: int | None, detail: list[Any] | None = None
) -> Exception:
    """Rebuild an allowlisted exception, or a RemoteError for anything else.

    A ``detail`` from the helper is kept as ``exc.remote_detail``
    (:class:`RemoteDetail`): it is data, never acted on here.
    """
    exc = _rebuild(type_name, message, errno)
    if detail is not None:
        exc.remote_detail = RemoteDetail(*detail)  # type: ignore[attr-defined]
    return exc


def _rebuild(type_name: str, message: str, errno: int | None) -> Exception:
    cls = _PRIVSEPD_ALLOWED.get(type_name)
    if cls is not None:
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        # Structured fields do not cross; keep the attributes defined so
        # that code reading them gets None rather than AttributeError.
        for attr in _STRUCTURED_FIELDS.get(cls, ()):
            setattr(exc, attr, None)
        if issubclass(cls, PolicyError):
            setattr(exc, "reason", message)  # noqa: B010 - PolicyError's own field
        if isinstance(exc, CrossingError):
            exc.side = "result"  # only the helper's replies carry it
        return exc
    builtin = _BUILTIN_ALLOWED.get(type_name)
    if builtin is None:
        return RemoteError(type_name, message)
    if issubclass(builtin, OSError) and errno is not None:
        return builtin(errno, message)
    return builtin(message)
