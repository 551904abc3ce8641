"""The channel protocol, free of I/O (sans-IO, in the style of h11).

Bytes go in through ``receive_data``, events come out; messages go in through
``send_*``, bytes come out. Nothing here touches a socket, so the decoder can
be fuzzed directly. Its invariant: for any input it either yields events or
raises :class:`~privsepd.errors.ProtocolError` -- never anything else.

Wire format: every frame is a 4-byte big-endian length followed by that many
bytes of msgpack. The length is checked against ``Limits.max_frame`` before a
single payload byte is buffered beyond it.

Messages (all msgpack arrays):

=============  ==========================================================
hello          ``["privsepd", VERSION, context_name]``  client -> helper
welcome        ``["privsepd", VERSION, context_name, "ok" | "err", text]``
request        ``[id, op, name, args, kwargs]``  op: "call" | "exec" | "ping"
reply          ``[id, "ok", result]`` | ``[id, "err", [type, message, errno]]``
               or ``[id, "err", [type, message, errno, detail]]``, detail =
               ``[module, qualname, args, attrs]`` (errors.exception_detail)
log            ``[0, "log", [levelno, logger_name, message]]``
=============  ==========================================================

Only msgpack-native values cross: None, bool, int, float, str, bytes, list,
dict. Bytes stay bytes and str stays str (bin and str types are distinct).
"""

from __future__ import annotations

import enum
import struct
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from privsepd.errors import CrossingError, HandshakeError, ProtocolError

MAGIC = "privsepd"
VERSION = 1
HEADER = struct.Struct(">I")

OP_CALL = "call"
OP_EXEC = "exec"
OP_PING = "ping"
OPS = frozenset({OP_CALL, OP_EXEC, OP_PING})

KIND_OK = "ok"
KIND_ERR = "err"
KIND_LOG = "log"


@dataclass(frozen=True)
class Limits:
    """Hard bounds on what one frame may contain; both sides enforce them."""

    max_frame: int = 4 * 1024 * 1024
    max_depth: int = 32
    max_container: int = 65536
    # Containers per message: a 4 MiB frame of one-byte empty maps would
    # otherwise decode to four million dicts (~260 MiB).
    max_containers_total: int = 100_000
    # Function names and argv[0]: PATH_MAX characters. A name is echoed into
    # errors and audit records, so it must be bounded before anything reads it.
    max_name: int = 4096


DEFAULT_LIMITS = Limits()

_NATIVE_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def check_value(value: Any, limits: Limits = DEFAULT_LIMITS, _depth: int = 0) -> None:
    """Raise ProtocolError unless ``value`` is msgpack-native and within limits.

    msgpack's C unpacker bounds container lengths before allocating, but not
    nesting depth below its own 1024-level stack, nor foreign types such as
    ``Timestamp``; this walk closes those gaps on both encode and decode.
    Exact types only: a subclass (an IntEnum, a str subclass with behaviour)
    would not come out of the other side as what went in.
    """
    cls = type(value)
    if cls in _NATIVE_SCALARS:
        return
    if _depth >= limits.max_depth:
        raise ProtocolError(f"value nested deeper than {limits.max_depth} levels")
    if cls is list or cls is tuple:
        if len(value) > limits.max_container:
            raise ProtocolError(f"array of {len(value)} items exceeds {limits.max_container}")
        for item in value:
            if type(item) not in _NATIVE_SCALARS:
                check_value(item, limits, _depth + 1)
        return
    if cls is dict:
        if len(value) > limits.max_container:
            raise ProtocolError(f"map of {len(value)} items exceeds {limits.max_container}")
        for key, item in value.items():
            if type(key) not in _NATIVE_SCALARS:
                # msgpack decodes array keys to unhashable lists (and fails);
                # nothing but scalars is a sensible key on either side.
                raise ProtocolError("map keys must be scalars")
            if type(item) not in _NATIVE_SCALARS:
                check_value(item, limits, _depth + 1)
        return
    raise ProtocolError(f"type {cls.__name__} cannot cross the channel")


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr of a peer's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


# One msgpack Packer per thread. ``packb`` builds a Packer per call, and with
# it a 256 KiB buffer: in a helper (whose malloc mmaps every block over 128
# KiB, see helper.memory) that was an mmap, a page fault and a munmap per
# reply. A Packer is not shared between threads (its buffer is its state).
_packers = threading.local()
# A Packer that grew past this for one big frame is dropped, not kept: a
# helper must give a large call's memory back (helper.memory).
_PACKER_KEEP = 64 * 1024


def _packb(message: Any) -> bytes:
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, buf_size=4096)
    try:
        payload = packer.pack(message)  # autoreset: empty again, also after an error
    except BaseException:
        del _packers.packer  # whatever state it is in, it is not reused
        raise
    if len(payload) > _PACKER_KEEP:
        del _packers.packer
    return payload


def encode_frame(message: Any, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Serialize one message as a length-prefixed frame.

    Every reason a value cannot be sent raises :class:`CrossingError` (a
    ProtocolError): nothing was written, so the connection stays usable.
    """
    try:
        check_value(message, limits)
    except ProtocolError as exc:
        raise CrossingError(str(exc)) from None
    try:
        payload = _packb(message)
    except OverflowError as exc:
        raise CrossingError(f"an integer is outside msgpack's 64-bit range ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise CrossingError(f"cannot encode message: {exc}") from None
    if len(payload) > limits.max_frame:
        raise CrossingError(
            f"frame of {len(payload)} bytes exceeds limit of {limits.max_frame} (max_frame)"
        )
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into decoded messages, enforcing ``Limits``.

    After the first error the decoder is poisoned: the stream position can no
    longer be trusted, so every later call raises the same error.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._error: ProtocolError | None = None
        self._options = {
            "raw": False,
            "use_list": True,
            "strict_map_key": False,
            "ext_hook": _reject_ext,
            "timestamp": 0,
            "max_str_len": limits.max_frame,
            "max_bin_len": limits.max_frame,
            "max_array_len": limits.max_container,
            "max_map_len": limits.max_container,
            "max_ext_len": 64,  # larger ones fail here; smaller ones reach _reject_ext
        }

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        if not buf:
            return self._feed_fresh(data)
        buf += data
        out = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            end = pos + 4 + self._frame_length(buf, pos)
            if end > size:
                break
            out.append(self._decode(bytes(buf[pos + 4 : end])))
            pos = end
        if pos:
            del buf[:pos]
        return out

    def _frame_length(self, data: bytes | bytearray, pos: int) -> int:
        """The payload length in the header at ``pos``; an oversize or empty frame is refused."""
        (length,) = HEADER.unpack_from(data, pos)
        if length > self.limits.max_frame:
            raise ProtocolError(f"frame of {length} bytes exceeds limit of {self.limits.max_frame}")
        if length == 0:
            raise ProtocolError("empty frame")
        return length

    def _feed_fresh(self, data: bytes) -> list[Any]:
        """``_feed`` when nothing is buffered: whole frames decode straight from ``data``.

        The common case (a read that holds whole frames) then copies no
        payload; only an incomplete tail is buffered. Same checks, same order.
        """
        out = []
        pos = 0
        size = len(data)
        view = memoryview(data)  # (not released: the decoder may hold a slice)
        while size - pos >= 4:
            end = pos + 4 + self._frame_length(data, pos)
            if end > size:
                break
            out.append(self._decode(view[pos + 4 : end]))
            pos = end
        if pos < size:
            self._buf += data[pos:]
        return out

    def _decode(self, payload: bytes | memoryview) -> Any:
        limits = self.limits
        budget = limits.max_containers_total
        if len(payload) <= budget:
            # Every array or map takes at least one byte of the payload, so
            # this one cannot exceed the budget: no per-container hook.
            try:
                value = msgpack.unpackb(payload, **self._options)
            except ProtocolError:
                raise
            except Exception as exc:
                raise ProtocolError(f"malformed frame: {type(exc).__name__}: {exc}") from None
            check_value(value, limits)
            return value
        count = 0

        def count_container(obj: Any) -> Any:
            # Called by msgpack as each array/map is built: the budget stops
            # decoding long before a hostile frame has been materialized.
            nonlocal count
            count += 1
            if count > budget:
                raise ProtocolError(f"message has more than {budget} arrays/maps")
            return obj

        try:
            value = msgpack.unpackb(
                payload,
                object_hook=count_container,
                list_hook=count_container,
                **self._options,
            )
        except ProtocolError:
            raise
        except Exception as exc:
            # msgpack raises ExtraData, FormatError, StackError (ValueError
            # subclasses), UnicodeDecodeError, ...: the fuzz invariant says the
            # caller only ever sees ProtocolError.
            raise ProtocolError(f"malformed frame: {type(exc).__name__}: {exc}") from None
        check_value(value, limits)
        return value


# ---------------------------------------------------------------- events


class Request(NamedTuple):
    id: int
    op: str
    name: str
    args: list
    kwargs: dict


class Reply(NamedTuple):
    id: int
    ok: bool
    result: Any = None
    error: tuple | None = None  # (type, message, errno[, detail])


class LogRecord(NamedTuple):
    levelno: int
    logger: str
    message: str


class Welcome(NamedTuple):
    context: str


class State(enum.Enum):
    AWAIT_HELLO = "await-hello"
    READY = "ready"
    CLOSED = "closed"


def _check_request(msg: Any, limits: Limits = DEFAULT_LIMITS) -> Request:
    if not isinstance(msg, list) or len(msg) != 5:
        raise ProtocolError("request must be a 5-item array [id, op, name, args, kwargs]")
    rid, op, name, args, kwargs = msg
    if type(rid) is not int or not 0 < rid < 2**63:
        raise ProtocolError("request id must be a positive integer")
    if type(op) is not str or op not in OPS:
        raise ProtocolError(f"unknown operation {_short(op)}")
    if not isinstance(name, str):
        raise ProtocolError("request name must be a string")
    if len(name) > limits.max_name:
        raise ProtocolError(f"request name of {len(name)} characters exceeds {limits.max_name}")
    if not isinstance(args, list):
        raise ProtocolError("request args must be an array")
    if not isinstance(kwargs, dict) or (kwargs and not all(isinstance(k, str) for k in kwargs)):
        raise ProtocolError("request kwargs must be a map with string keys")
    return Request(rid, op, name, args, kwargs)


def _check_reply(msg: Any) -> Reply | LogRecord:
    if not isinstance(msg, list) or len(msg) != 3:
        raise ProtocolError("reply must be a 3-item array [id, kind, payload]")
    rid, kind, payload = msg
    if type(rid) is not int or rid < 0:
        raise ProtocolError("reply id must be a non-negative integer")
    if kind == KIND_OK:
        return Reply(rid, True, payload)
    if kind == KIND_ERR:
        if (
            not isinstance(payload, list)
            or len(payload) not in (3, 4)
            or not isinstance(payload[0], str)
            or not isinstance(payload[1], str)
            or not (payload[2] is None or type(payload[2]) is int)
        ):
            raise ProtocolError("error payload must be [type, message, errno]")
        if len(payload) == 4:
            if not _is_detail(payload[3]):
                raise ProtocolError(
                    "error detail must be [module, qualname, args, attrs] "
                    "with str names and attribute keys"
                )
            return Reply(rid, False, None, tuple(payload))
        return Reply(rid, False, None, (payload[0], payload[1], payload[2]))
    if kind == KIND_LOG:
        if (
            not isinstance(payload, list)
            or len(payload) != 3
            or type(payload[0]) is not int
            or not isinstance(payload[1], str)
            or not isinstance(payload[2], str)
        ):
            raise ProtocolError("log payload must be [levelno, logger, message]")
        return LogRecord(payload[0], payload[1], payload[2])
    raise ProtocolError(f"unknown reply kind {_short(kind)}")


def _is_detail(detail: Any) -> bool:
    """Shape of an error's detail; its bounds are the frame limits."""
    return (
        isinstance(detail, list)
        and len(detail) == 4
        and isinstance(detail[0], str)
        and isinstance(detail[1], str)
        and isinstance(detail[2], list)
        and isinstance(detail[3], dict)
        and all(isinstance(k, str) for k in detail[3])
    )


def _is_log(msg: Any) -> bool:
    """Log frames may precede the welcome (the helper logs while it starts)."""
    return isinstance(msg, list) and len(msg) == 3 and msg[:2] == [0, KIND_LOG]


class ServerProtocol:
    """Helper side: expects a hello, then a stream of requests."""

    def __init__(self, context: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.context = context
        self.limits = limits
        self.state = State.AWAIT_HELLO
        self.pending_output = b""
        self._decoder = FrameDecoder(limits)

    def receive_data(self, data: bytes) -> list[Request]:
        """Feed bytes; return the complete requests they finish.

        A hello is answered internally: read ``pending_output`` after the
        first call. Any violation moves the state to CLOSED and raises.
        """
        if self.state is State.CLOSED:
            raise ProtocolError("connection is closed")
        try:
            messages = self._decoder.feed(data)
            out: list[Request] = []
            for msg in messages:
                if self.state is State.AWAIT_HELLO:
                    self._on_hello(msg)
                else:
                    out.append(_check_request(msg, self.limits))
            return out
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def take_output(self) -> bytes:
        out, self.pending_output = self.pending_output, b""
        return out

    @property
    def buffered(self) -> int:
        """Bytes of a frame begun but not complete (the server bounds how long)."""
        return self._decoder.buffered

    def _on_hello(self, msg: Any) -> None:
        if not isinstance(msg, list) or len(msg) != 3 or msg[0] != MAGIC:
            raise ProtocolError("first frame is not a privsepd hello")
        _, version, context = msg
        # Exactly the int: True == 1 and 1.0 == 1 in Python, but a peer
        # that sends them does not speak this protocol.
        if type(version) is not int or version != VERSION:
            text = f"protocol version mismatch: client speaks {_short(version)}, helper {VERSION}"
            self.pending_output += encode_frame([MAGIC, VERSION, self.context, KIND_ERR, text])
            raise HandshakeError(text)
        if context != self.context:
            text = (
                f"context mismatch: client asked for {_short(context)}, "
                f"helper serves {self.context!r}"
            )
            self.pending_output += encode_frame([MAGIC, VERSION, self.context, KIND_ERR, text])
            raise HandshakeError(text)
        self.pending_output += encode_frame([MAGIC, VERSION, self.context, KIND_OK, ""])
        self.state = State.READY

    def reply_ok(self, rid: int, result: Any) -> bytes:
        return encode_frame([rid, KIND_OK, result], self.limits)

    def reply_error(
        self,
        rid: int,
        type_name: str,
        message: str,
        errno: int | None,
        detail: list | None = None,
    ) -> bytes:
        payload = [type_name, message, errno]
        if detail is not None:
            payload.append(detail)
            try:
                return encode_frame([rid, KIND_ERR, payload], self.limits)
            except ProtocolError:
                payload.pop()  # the detail is a courtesy: never lose the error for it
        return encode_frame([rid, KIND_ERR, payload], self.limits)

    def log(self, levelno: int, logger: str, message: str) -> bytes:
        return encode_frame([0, KIND_LOG, [levelno, logger, message]], self.limits)

    def reject(self, text: str) -> bytes:
        """A fatal error before READY (e.g. the helper failed to scope)."""
        self.state = State.CLOSED
        return encode_frame([MAGIC, VERSION, self.context, KIND_ERR, text])


class ClientProtocol:
    """Service side: sends a hello, waits for welcome, then requests/replies."""

    def __init__(self, context: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.context = context
        self.limits = limits
        self.state = State.AWAIT_HELLO
        self._decoder = FrameDecoder(limits)

    def hello(self) -> bytes:
        return encode_frame([MAGIC, VERSION, self.context])

    def request(self, rid: int, op: str, name: str, args: Any, kwargs: dict) -> bytes:
        if self.state is not State.READY:
            raise ProtocolError(f"cannot send a request in state {self.state.value}")
        if type(name) is not str or len(name) > self.limits.max_name:
            raise ProtocolError(
                f"request name must be a str of at most {self.limits.max_name} characters"
            )
        return encode_frame([rid, op, name, list(args), kwargs], self.limits)

    def receive_data(self, data: bytes) -> list[Welcome | Reply | LogRecord]:
        if self.state is State.CLOSED:
            raise ProtocolError("connection is closed")
        try:
            out: list[Welcome | Reply | LogRecord] = []
            for msg in self._decoder.feed(data):
                if self.state is State.AWAIT_HELLO and not _is_log(msg):
                    out.append(self._on_welcome(msg))
                else:
                    out.append(_check_reply(msg))
            return out
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def _on_welcome(self, msg: Any) -> Welcome:
        if not isinstance(msg, list) or len(msg) != 5 or msg[0] != MAGIC:
            raise ProtocolError("first frame from helper is not a privsepd welcome")
        _, version, context, kind, text = msg
        if kind == KIND_ERR:
            raise HandshakeError(f"helper refused: {text}")
        if type(version) is not int or version != VERSION:
            raise HandshakeError(
                f"protocol version mismatch: helper speaks {_short(version)}, client {VERSION}"
            )
        if context != self.context:
            raise HandshakeError(f"context mismatch: helper serves {_short(context)}")
        if kind != KIND_OK:
            raise ProtocolError(f"unknown welcome kind {_short(kind)}")
        self.state = State.READY
        return Welcome(context)
