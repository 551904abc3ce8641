"""Audit records: one structured line per privileged decision, kept by root.

The privileged side (the helper, the daemon, ``privsepd-rootwrap``) writes
every record itself, through a sink it opened as root before scoping, so a
compromised client can neither suppress nor forge the trail. Sinks, by the
``audit`` setting of a context:

=======================  ================================================
(not set)                syslog/journald through ``/dev/log`` when it
                         accepts a connection, else the JSON-lines file
                         :data:`DEFAULT_FILE`
``"syslog"``             ``/dev/log`` (``"syslog:/PATH"``: another socket)
``"/absolute/path"``     a JSON-lines file
``"none"``               no root-owned trail (an explicit opt-out)
=======================  ================================================

A sink that cannot be opened is an :class:`~privsepd.errors.AuditError` at
start, never a silent fallback. A file sink's directory chain must pass the
policy trust check (root-owned, not group/world-writable, up to ``/``), the
file is opened without following symlinks, created ``0600`` and must be a
root-owned regular file nobody else can write. The default directory
``/var/log/privsepd`` is created ``0750``.

Every field is bounded (:data:`MAX_FIELD` characters per string with a
``...[+N chars]`` marker, :data:`MAX_ITEMS` items per list or map,
:data:`MAX_RECORD` characters per record) and a record that lost anything
says ``"truncated": true``. Records are JSON with every control and
non-ASCII character escaped, so no field can start a second line. A copy of
each record also goes to the ``privsepd.audit`` logger (denials and errors
at WARNING, the rest at DEBUG); in a helper that copy reaches the client,
as a convenience only.
"""

from __future__ import annotations

import _socket  # not socket: privsepd-rootwrap starts faster without selectors and enum
import os
import stat
import time

from privsepd.errors import AuditError

# Linux's (asm-generic) value; PyPy 3.9's os module lacks the name.
_O_PATH = getattr(os, "O_PATH", 0o10000000)

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_FILE",
    "MAX_FIELD",
    "MAX_ITEMS",
    "MAX_RECORD",
    "SYSLOG_SOCKET",
    "AuditLog",
    "RecordTemplate",
    "bound_fields",
    "encode_json",
    "escape_control",
]

DEFAULT_DIR = "/var/log/privsepd"
DEFAULT_FILE = DEFAULT_DIR + "/audit.jsonl"
SYSLOG_SOCKET = "/dev/log"

#: Characters kept of one string (a name, an argv item, a message).
MAX_FIELD = 1024
#: Items kept of one list or map (argv included).
MAX_ITEMS = 64
#: Levels of nesting kept; deeper values become a bounded repr.
MAX_DEPTH = 4
#: Characters of strings kept across one whole record.
MAX_RECORD = 16384

# <86> = facility authpriv (10) * 8 + severity info (6).
_SYSLOG_PRI = 86
_SEND_TIMEOUT = 5.0
try:  # json's C accelerator itself, without json's ~1.5 ms of imports
    from _json import encode_basestring_ascii as _json_str
    from _json import make_encoder as _make_encoder
except ImportError:  # pragma: no cover -- PyPy: the Python encoder below
    from json.encoder import encode_basestring_ascii as _json_str

    _make_encoder = None

TYPE_CHECKING = False  # not typing: privsepd-rootwrap imports this module
if TYPE_CHECKING:
    from typing import Any

_INF = float("inf")
_DECISIONS_AT_WARNING = frozenset({"deny", "error", "fatal", "protocol-violation"})


# -- bounding -----------------------------------------------------------------------


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a hostile __repr__ must not take the record down
        return f"<unrepresentable {type(value).__name__}>"


class _Bounder:
    """Turns any value into bounded, JSON-native data (str keys, finite numbers)."""

    def __init__(self) -> None:
        self.left = MAX_RECORD
        self.truncated = False

    def text(self, value: str) -> str:
        limit = max(0, min(MAX_FIELD, self.left))
        if len(value) > limit:
            self.truncated = True
            value = f"{value[:limit]}...[+{len(value) - limit} chars]"
        self.left -= len(value)
        return value

    def value(self, value: Any, depth: int = 0) -> Any:
        cls = type(value)
        if cls is str:
            size = len(value)
            if size <= MAX_FIELD and size <= self.left:  # the common case, inline
                self.left -= size
                return value
            return self.text(value)
        if value is None or cls is bool:
            return value
        if cls is int:
            return value if -(2**64) < value < 2**64 else self.text(str(value))
        if cls is float:
            return value if -_INF < value < _INF else str(value)
        if cls is bytes or cls is bytearray:
            head = _repr(bytes(value[:MAX_FIELD]))
            if len(value) > MAX_FIELD:
                self.truncated = True
                head += f"...[+{len(value) - MAX_FIELD} bytes]"
            return self.text(head)
        if cls is list or cls is tuple:
            if depth >= MAX_DEPTH:
                self.truncated = True
                return self.text(_repr(value)[:MAX_FIELD])
            out = [self.value(item, depth + 1) for item in value[:MAX_ITEMS]]
            if len(value) > MAX_ITEMS:
                self.truncated = True
                out.append(f"...[+{len(value) - MAX_ITEMS} items]")
            return out
        if cls is dict:
            if depth >= MAX_DEPTH:
                self.truncated = True
                return self.text(_repr(value)[:MAX_FIELD])
            mapped: dict[str, Any] = {}
            for i, (key, item) in enumerate(value.items()):
                if i >= MAX_ITEMS:
                    self.truncated = True
                    mapped["..."] = f"[+{len(value) - MAX_ITEMS} items]"
                    break
                name = self.text(key if type(key) is str else _repr(key))
                mapped[name] = self.value(item, depth + 1)
            return mapped
        return self.text(_repr(value)[: MAX_FIELD + 1])


def bound_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fields`` with every value bounded; adds ``truncated`` if anything was cut."""
    bounder = _Bounder()
    value = bounder.value
    out = {}
    for key, item in fields.items():
        if type(key) is not str:
            key = str(key)
        cls = type(item)
        # Short strings and small ints, most of every record, inline: the
        # same test and accounting as _Bounder.value, without a call per field.
        if cls is str:
            size = len(item)
            if size <= MAX_FIELD and size <= bounder.left:
                bounder.left -= size
                out[key] = item
                continue
        elif cls is int and -(2**64) < item < 2**64:
            out[key] = item
            continue
        out[key] = value(item)
    if bounder.truncated:
        out["truncated"] = True
    return out


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-native")


# json.dumps builds a C encoder per call; this one is built once: sorted keys,
# "," and ":", ASCII escapes, NaN/Infinity allowed. No circular-reference
# markers: records are fresh trees from bound_fields (depth <= MAX_DEPTH).
_C_ENCODE = (
    None
    if _make_encoder is None
    else _make_encoder(None, _refuse, _json_str, None, ":", ",", True, False, True)
)


def encode_json(value: Any) -> str:
    """JSON text of JSON-native data (what :func:`bound_fields` returns), on one line.

    The same text as ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)``: every control and non-ASCII character leaves as an
    escape. Through json's C encoder without importing json (~1.5 ms of
    privsepd-rootwrap's start-up), else :func:`_encode_py`. Raises TypeError
    for values that are not JSON-native (maps must have str keys).
    """
    if _C_ENCODE is None:
        return _encode_py(value)
    return "".join(_C_ENCODE(value, 0))


def _encode_py(value: Any) -> str:
    """encode_json where json's C accelerator is missing (PyPy)."""
    cls = type(value)
    if cls is str:
        return _json_str(value)
    if cls is dict:
        for key in value:
            if type(key) is not str:
                raise TypeError(f"keys must be str, not {type(key).__name__}")
        return (
            "{" + ",".join(_json_str(k) + ":" + _encode_py(value[k]) for k in sorted(value)) + "}"
        )
    if cls is list or cls is tuple:
        return "[" + ",".join([_encode_py(item) for item in value]) + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if cls is int:
        return int.__repr__(value)
    if cls is float:
        if value != value:
            return "NaN"
        if value in (_INF, -_INF):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    return _refuse(value)


class RecordTemplate:
    """Records alike but for ``args``, ``kwargs`` and ``ts``: the rest encoded once.

    A helper writes an "allow" record before every call, and for one
    entrypoint and one peer only these three fields change. :meth:`line`
    returns exactly what ``encode_json(bound_fields(fields))`` returns for
    the fields in the order ``before``, ``args``, ``kwargs`` (only when not
    empty), ``after``, ``ts`` -- the same bounds, budget and key order --
    with the constant fields spliced in already encoded. A record in which
    anything would be truncated, or constant fields it cannot splice, take
    the general path.
    """

    __slots__ = ("_before", "_after", "_left", "_after_size", "_formats")

    _DYNAMIC = ("args", "kwargs", "ts")

    def __init__(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        self._before = dict(before)
        self._after = dict(after)
        self._formats: tuple[str, str] | None = None
        static = {**self._before, **self._after}
        if len(static) != len(self._before) + len(self._after):
            return  # a key in both: the general path settles it
        if any(key in self._DYNAMIC or key == "truncated" for key in static):
            return
        for key, item in static.items():
            if type(key) is not str:
                return
            if type(item) is str:
                if len(item) > MAX_FIELD:
                    return
            elif not (item is None or type(item) is bool or type(item) is int):
                return
            elif type(item) is int and not -(2**64) < item < 2**64:
                return
        self._left = MAX_RECORD - sum(len(v) for v in self._before.values() if type(v) is str)
        self._after_size = sum(len(v) for v in self._after.values() if type(v) is str)
        if self._left < 0 or self._after_size > self._left:
            return
        encoded = {key: encode_json(item).replace("%", "%%") for key, item in static.items()}

        def fmt(dynamic: tuple[str, ...]) -> str:
            parts = []
            for key in sorted([*static, *dynamic]):
                value = "%s" if key in dynamic else encoded[key]
                parts.append(_json_str(key).replace("%", "%%") + ":" + value)
            return "{" + ",".join(parts) + "}"

        self._formats = (fmt(("args", "ts")), fmt(("args", "kwargs", "ts")))

    @property
    def decision(self) -> Any:
        return self._before.get("decision", self._after.get("decision"))

    def line(self, args: Any, kwargs: Any, ts: float) -> str:
        """The record's JSON text, as :func:`encode_json` of :func:`bound_fields` gives it."""
        formats = self._formats
        if formats is not None and type(ts) is float and -_INF < ts < _INF:
            bounder = _Bounder()
            bounder.left = self._left
            bounded_args = bounder.value(args)
            bounded_kwargs = bounder.value(kwargs) if kwargs else None
            if not bounder.truncated and bounder.left >= self._after_size:
                stamp = float.__repr__(ts)
                if kwargs:
                    return formats[1] % (
                        encode_json(bounded_args),
                        encode_json(bounded_kwargs),
                        stamp,
                    )
                return formats[0] % (encode_json(bounded_args), stamp)
        fields = dict(self._before)
        fields["args"] = args
        if kwargs:
            fields["kwargs"] = kwargs
        fields.update(self._after)
        fields["ts"] = ts
        return encode_json(bound_fields(fields))


def escape_control(text: str) -> str:
    """``text`` on one line: backslash, control and line-separator characters escaped.

    For human-readable syslog lines (oslo's ``Unauthorized command: ...``):
    an argument holding ``\\n`` must not start a forged second line.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in (0x2028, 0x2029, 0x85):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


# -- sinks ------------------------------------------------------------------------


def _open_file(path: str) -> int:
    """Open (create 0600) a root-owned JSON-lines file in a trusted directory."""
    from privsepd.errors import PolicyError
    from privsepd.policy.trust import check_trusted

    if not path.startswith("/") or path.endswith("/"):
        raise AuditError(f"audit file must be an absolute file path, got {path!r}")
    directory, name = os.path.split(path)
    if path == DEFAULT_FILE:
        try:
            os.mkdir(DEFAULT_DIR, 0o750)
        except FileExistsError:
            pass
        except OSError as exc:
            raise AuditError(f"cannot create audit directory {DEFAULT_DIR}: {exc.strerror}")
    try:
        check_trusted(directory)
    except PolicyError as exc:
        raise AuditError(f"audit directory is not trusted: {exc}") from None
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    dir_fd = -1
    try:
        dir_fd = os.open(directory, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise AuditError(f"cannot open audit file {path}: {exc.strerror}") from None
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_uid != 0:
        why = f"is owned by uid {st.st_uid}, not root"
    elif st.st_mode & 0o022:
        why = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if why is not None:
        os.close(fd)
        raise AuditError(f"audit file {path} {why}")
    return fd


def _connect_syslog(address: str) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise AuditError(f"cannot connect to syslog socket {address}: {exc.strerror}") from None
    # A stalled syslog daemon fails the record (and so the call) instead of
    # hanging the helper.
    sock.settimeout(_SEND_TIMEOUT)
    return sock


class AuditLog:
    """Where audit records go; open it as root, before the helper drops privileges.

    ``AuditLog()`` has no root-owned sink (the logger copy only): what
    ``audit = "none"`` means, and what tests of single pieces use.
    """

    def __init__(
        self,
        fd: int | None = None,
        syslog: _socket.socket | None = None,
        *,
        description: str = "none",
        syslog_address: str | None = None,
        tag: str = "privsepd",
        client_copy: bool = True,
    ) -> None:
        self._fd = fd
        self._syslog = syslog
        self._syslog_address = syslog_address
        self.description = description
        self.tag = tag
        self.client_copy = client_copy

    @classmethod
    def open(cls, target: str | None, *, tag: str = "privsepd") -> AuditLog:
        """The sink ``target`` names (see the module docstring); AuditError if it cannot open."""
        if target is None or target == "":
            try:
                sock = _connect_syslog(SYSLOG_SOCKET)
            except AuditError as syslog_error:
                try:
                    fd = _open_file(DEFAULT_FILE)
                except AuditError as file_error:
                    raise AuditError(
                        f"no audit sink: {syslog_error}; {file_error}. Fix one, or set "
                        'audit = "none" for the context to run without a root-owned trail'
                    ) from None
                return cls(fd=fd, description=f"file {DEFAULT_FILE}", tag=tag)
            return cls(
                syslog=sock,
                description=f"syslog {SYSLOG_SOCKET}",
                syslog_address=SYSLOG_SOCKET,
                tag=tag,
            )
        if type(target) is not str:
            raise AuditError(f"audit target must be a string, got {type(target).__name__}")
        if target == "none":
            return cls(tag=tag)
        if target == "logger":
            raise AuditError(
                'audit = "logger" sent records only to the client, which may suppress them; '
                'use "none" to run without a root-owned trail, or leave audit unset'
            )
        if target == "syslog" or target.startswith("syslog:"):
            address = target[len("syslog:") :] if target != "syslog" else SYSLOG_SOCKET
            if not address.startswith("/"):
                raise AuditError(f"syslog socket must be an absolute path, got {address!r}")
            return cls(
                syslog=_connect_syslog(address),
                description=f"syslog {address}",
                syslog_address=address,
                tag=tag,
            )
        return cls(fd=_open_file(target), description=f"file {target}", tag=tag)

    @property
    def has_sink(self) -> bool:
        """True when records reach a root-owned sink (not only the logger copy)."""
        return self._fd is not None or self._syslog is not None

    def close(self) -> None:
        """Release the sink (the daemon's, once a reload has replaced it).

        Called by the daemon's single thread, after no record can reach it.
        """
        fd, self._fd = self._fd, None
        sock, self._syslog = self._syslog, None
        if fd is not None:
            os.close(fd)
        if sock is not None:
            sock.close()

    def fds(self) -> list[int]:
        """Descriptors the helper must keep open through scoping."""
        out = []
        if self._fd is not None:
            out.append(self._fd)
        if self._syslog is not None:
            out.append(self._syslog.fileno())
        return out

    def wants(self, decision: str) -> bool:
        """Whether a record of this decision goes anywhere (cheap; per call)."""
        if self._fd is not None or self._syslog is not None:
            return True
        return _logger().isEnabledFor(10 if decision not in _DECISIONS_AT_WARNING else 30)

    def record(self, **fields: Any) -> None:
        """Write one bounded record; raise AuditError if the sink refused it.

        Callers that are about to act must treat AuditError as "do not act".
        """
        fields.setdefault("ts", round(time.time(), 6))
        self._emit(fields.get("decision"), encode_json(bound_fields(fields)))

    def record_from(self, template: RecordTemplate, args: Any, kwargs: Any) -> None:
        """:meth:`record` of a template's fields with these ``args`` and ``kwargs``.

        The same text, the same write and the same AuditError as
        :meth:`record`; only the constant fields' encoding is done once.
        """
        line = template.line(args, kwargs, round(time.time(), 6))
        self._emit(template.decision, line)

    def _emit(self, decision: Any, line: str) -> None:
        """Write one encoded record; AuditError if the sink refused it."""
        try:
            if self._fd is not None:
                data = line.encode() + b"\n"
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(0, f"short write ({written} of {len(data)} bytes)")
            elif self._syslog is not None:
                self._send_syslog(f"<{_SYSLOG_PRI}>{self.tag}[{os.getpid()}]: {line}".encode())
        except OSError as exc:
            raise AuditError(
                f"audit record could not be written to {self.description}: {exc.strerror or exc}"
            ) from None
        finally:
            if self.client_copy:
                self._copy_to_logger(decision, line)

    def _send_syslog(self, message: bytes) -> None:
        assert self._syslog is not None
        try:
            self._syslog.send(message)
        except _socket.timeout:  # TimeoutError from 3.10 on; not on 3.9
            raise
        except OSError:
            if self._syslog_address is None:
                raise
            # The syslog daemon restarted (its old socket is gone): reconnect once.
            self._syslog.connect(self._syslog_address)
            self._syslog.send(message)

    @staticmethod
    def _copy_to_logger(decision: Any, line: str) -> None:
        logger = _logger()
        level = 30 if decision in _DECISIONS_AT_WARNING else 10
        # Without a handler, logging's last resort would print to stderr.
        if logger.isEnabledFor(level) and logger.hasHandlers():
            logger.log(level, line)


_LOGGER = None


def _logger() -> Any:
    """``privsepd.audit``; logging is imported on first use (rootwrap never needs it)."""
    global _LOGGER
    if _LOGGER is None:
        import logging

        _LOGGER = logging.getLogger("privsepd.audit")
    return _LOGGER
