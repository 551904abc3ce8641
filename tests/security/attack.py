"""The attacker's toolkit: raw channel peers, hostile frames, audit readers.

A compromised service holds the client end of the channel and can write any
bytes to it. :class:`RawPeer` is that service: it speaks the wire format by
hand (``msgpack.packb`` with no checks, ext types, lying length prefixes)
and reads what the helper answers. :class:`AuditTrail` and
:class:`SyslogTrail` read what the privileged side recorded, so every test
can show that its attempt was named there.

Every check here raises ``AssertionError`` (never ``pytest.fail``) so that
``xfail(raises=AssertionError)`` markers catch exactly "the attack worked"
and nothing else.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
from conftest import in_child

from privsepd.channel.protocol import MAGIC, VERSION

MODULE = "security.entrypoints"
HEADER = struct.Struct(">I")


def fn(name: str) -> str:
    """The wire name of one of tests/security/entrypoints.py's functions."""
    return f"{MODULE}:{name}"


# -- outcomes ---------------------------------------------------------------------


def refused(action: Callable[[], Any], *types: type[BaseException], match: str = "") -> Exception:
    """Run ``action``; it must raise one of ``types`` (message matching ``match``)."""
    try:
        result = action()
    except types as exc:
        if match and not re.search(match, str(exc)):
            raise AssertionError(f"refused, but for another reason: {exc!r} (wanted {match!r})")
        return exc
    raise AssertionError(f"ATTACK SUCCEEDED: {action} returned {result!r}")


def as_user(uid: int, gid: int, action: Callable[[], Any]) -> Any:
    """Run ``action`` in a forked child that has become ``uid``/``gid`` (no groups).

    This is the compromised service after it dropped root. Import everything
    first: the interpreter under /root is unreadable once the child switched.
    ``action`` returns something JSON-encodable (catch and describe errors).
    """

    def child() -> Any:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        return action()

    return in_child(child)


def outcome(action: Callable[[], Any]) -> str:
    """``"ok <result>"`` or ``"<ExceptionType>: <message>"``: crosses a fork as text."""
    try:
        return f"ok {action()!r}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it serves nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # gone before or during the read
        return True


# -- frames -------------------------------------------------------------------------


def packed(message: Any) -> bytes:
    """msgpack of ``message`` exactly as an attacker would send it: no checks."""
    return msgpack.packb(message, use_bin_type=True, strict_types=False)


def frame(payload: bytes, length: int | None = None) -> bytes:
    """A frame around ``payload``; ``length`` lets the prefix lie."""
    return HEADER.pack(len(payload) if length is None else length) + payload


def nested(levels: int, leaf: Any = 0) -> Any:
    """``levels`` lists, each holding the next: nested(2) == [[0]]."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def depth(value: Any) -> int:
    """Nesting levels of lists/maps (what the protocol's max_depth counts)."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


# -- a hostile client -----------------------------------------------------------------


class RawPeer:
    """One connection to a helper, driven byte by byte."""

    def __init__(self, sock: socket.socket, context: str, helper: Any = None) -> None:
        self.sock = sock
        self.context = context
        self.helper = helper  # HelperProcess (fork/spawn) or None (daemon)
        self._buf = bytearray()
        self._stash: dict[Any, list] = {}
        self.eof = False

    # sending
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_msg(self, message: Any) -> None:
        self.send(frame(packed(message)))

    def hello(self, version: Any = VERSION, context: str | None = None) -> None:
        self.send_msg([MAGIC, version, self.context if context is None else context])

    def request(self, rid: Any, op: Any, name: Any, args: Any = (), kwargs: Any = None) -> None:
        args = list(args) if isinstance(args, tuple) else args
        self.send_msg([rid, op, name, args, kwargs or {}])

    def handshake(self) -> RawPeer:
        self.hello()
        welcome = self.next_message(10)
        if welcome is None or welcome[:2] != [MAGIC, VERSION] or welcome[3] != "ok":
            raise AssertionError(f"handshake failed: {welcome!r}")
        return self

    # receiving
    def _fill(self, timeout: float) -> bool:
        if self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    def next_message(self, timeout: float = 5.0) -> Any:
        """The next frame the helper sent (log frames skipped), or None at EOF/timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self._buf) >= 4:
                (n,) = HEADER.unpack_from(self._buf)
                if len(self._buf) < 4 + n:
                    break
                payload = bytes(self._buf[4 : 4 + n])
                del self._buf[: 4 + n]
                msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                if not (isinstance(msg, list) and msg[:2] == [0, "log"]):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return None
            self._fill(left)

    def reply(self, rid: Any, timeout: float = 10.0) -> list:
        """The next reply to ``rid``; replies to other ids are kept for later."""
        stash = self._stash.get(rid)
        if stash:
            return stash.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(max(deadline - time.monotonic(), 0))
            if msg is None:
                raise AssertionError(f"no reply to request {rid!r} (eof={self.eof})")
            if msg[0] == rid:
                return msg
            self._stash.setdefault(msg[0], []).append(msg)

    def call(self, name: str, *args: Any, rid: int = 1, **kwargs: Any) -> Any:
        """A well-formed call; returns the result or raises AssertionError with the error."""
        self.request(rid, "call", name, list(args), kwargs)
        msg = self.reply(rid)
        if msg[1] != "ok":
            raise AssertionError(f"call {name} failed: {msg[2]!r}")
        return msg[2]

    def expect_error(self, rid: int, type_name: str, *words: str) -> str:
        """The helper answered ``rid`` with an error of ``type_name`` mentioning ``words``."""
        msg = self.reply(rid)
        if msg[1] != "err":
            raise AssertionError(f"ATTACK SUCCEEDED: request {rid} got {msg!r}")
        kind, text = msg[2][0], msg[2][1]  # [type, message, errno, ...]
        if kind != type_name or not all(w in text for w in words):
            raise AssertionError(f"refused as {kind}: {text!r}, wanted {type_name} {words}")
        return text

    def expect_violation(self, *words: str, timeout: float = 5.0) -> str:
        """The helper named the violation and closed the connection."""
        reason = None
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(max(deadline - time.monotonic(), 0))
            if msg is None:
                break
            if msg[:2] == [0, "err"]:  # fatal protocol error
                reason = msg[2][1]
            elif len(msg) == 5 and msg[0] == MAGIC and msg[3] == "err":  # refused handshake
                reason = msg[4]
            elif msg[1] == "ok" or (len(msg) == 5 and msg[3] == "ok"):
                raise AssertionError(f"ATTACK SUCCEEDED: helper answered {msg!r}")
        if reason is None:
            raise AssertionError(f"helper gave no reason (eof={self.eof}) within {timeout:g}s")
        if not all(w in reason for w in words):
            raise AssertionError(f"violation {reason!r} does not mention {words}")
        if not self.eof:
            raise AssertionError(f"helper named {reason!r} but kept the connection open")
        return reason

    def hung_up(self) -> bool:
        """Whether the helper has closed the connection (polls, never blocks)."""
        while not self.eof and self._fill(0):
            pass
        return self.eof

    def expect_closed(self, within: float) -> None:
        """The helper hung up on us within ``within`` seconds."""
        deadline = time.monotonic() + within
        while not self.eof and time.monotonic() < deadline:
            if not self._fill(deadline - time.monotonic()):
                continue
            self._buf.clear()
        if not self.eof:
            raise AssertionError(f"ATTACK SUCCEEDED: connection still held after {within:g}s")

    def expect_clean_exit(self, timeout: float = 5.0) -> None:
        """A helper we started left with status 0 (refused and went away, not crashed)."""
        if self.helper is None or self.helper.pid is None:
            return
        status = self.helper.poll(timeout)
        if status is None:
            raise AssertionError(f"helper {self.helper.pid} still running after {timeout:g}s")
        if status == -1:
            return  # reaped elsewhere
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise AssertionError(f"helper did not exit cleanly: {self.helper.describe_exit()}")

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.helper is not None and self.helper.pid is not None:
                self.helper.stop(timeout=2.0)


# -- SCM_RIGHTS ------------------------------------------------------------------------


def send_with_fds(sock: socket.socket, data: bytes, fds: Iterable[int]) -> None:
    """Send ``data`` with descriptors attached (what fd passing would look like)."""
    fds = list(fds)
    rights = struct.pack(f"{len(fds)}i", *fds)
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- audit ---------------------------------------------------------------------------------


def _matches(record: dict, want: dict[str, Any]) -> bool:
    for key, value in want.items():
        got = record.get(key)
        if callable(value):
            if not value(got):
                return False
        elif isinstance(value, str) and not isinstance(got, str):
            if value not in json.dumps(got):
                return False
        elif isinstance(value, str):
            if value not in got:
                return False
        elif got != value:
            return False
    return True


def EXEC_OR_COMMAND(op: Any) -> bool:  # noqa: N802 -- used like a constant
    """A command's record: the helper's own (op "exec") or its runner's (no op)."""
    return op in (None, "exec")


def argv_has(*words: str) -> Callable[[Any], bool]:
    """Matches an audit ``argv`` holding ``words`` whether it is stored as a
    JSON list or (as today) as the repr of one."""

    def check(argv: Any) -> bool:
        if isinstance(argv, list):
            return all(any(w == a or w in a for a in argv if isinstance(a, str)) for w in words)
        return isinstance(argv, str) and all(w in argv for w in words)

    return check


class _Trail:
    """Records written by the privileged side; subclasses say where from."""

    def records(self) -> list[dict]:
        raise NotImplementedError

    def find(self, **want: Any) -> list[dict]:
        return [r for r in self.records() if _matches(r, want)]

    def expect(self, within: float = 1.0, **want: Any) -> dict:
        """The first record with every field matching (str values: substring)."""
        deadline = time.monotonic() + within
        while True:
            found = self.find(**want)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                shown = "\n  ".join(json.dumps(r)[:300] for r in self.records()[-15:])
                raise AssertionError(f"no audit record with {want}; last records:\n  {shown}")
            time.sleep(0.02)

    def mentions(self, text: str) -> list[dict]:
        return [r for r in self.records() if text in json.dumps(r)]


class AuditTrail(_Trail):
    """A JSON-lines audit file (the helper's or daemon's own sink)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def records(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n"):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"unparsable": line[:200].decode(errors="replace")})
        return out

    def size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0


class SyslogTrail(_Trail):
    """Datagrams sent to ``/dev/log`` (bound privately per test, see ``private_dev_log``)."""

    _RECORD = re.compile(rb"^<\d+>[\w.-]+\[\d+\]: (\{.*\})$", re.S)

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.datagrams: list[bytes] = []
        # Drained all the time: a datagram socket whose queue is full blocks
        # its senders, and the shim would hang in its audit write.
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            self.datagrams.append(data)

    def lines(self) -> list[bytes]:
        return list(self.datagrams)

    def records(self) -> list[dict]:
        out = []
        for dgram in self.lines():
            m = self._RECORD.match(dgram.rstrip(b"\0"))
            if m:
                try:
                    out.append(json.loads(m.group(1)))
                except ValueError:
                    pass
        return out

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


#: Runs argv in a private mount namespace whose /dev/log is our socket: the
#: host has no syslog daemon, and binding the real /dev/log would steal other
#: processes' records. The rest of /dev is bound through unchanged.
PRIVATE_DEV_LOG = r"""
set -e
mkdir -p "$1/hostdev"
mount --rbind /dev "$1/hostdev"
mount -t tmpfs -o mode=755 privsepd-redteam /dev
for n in null zero full random urandom tty; do
    touch "/dev/$n"; mount --bind "$1/hostdev/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
touch /dev/log
mount --bind "$2" /dev/log
shift 2
exec "$@"
"""


def private_dev_log(scratch: str, log_socket: str, argv: list[str]) -> list[str]:
    """``argv`` wrapped so that it runs with ``log_socket`` as its /dev/log."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        PRIVATE_DEV_LOG,
        "sh",
        scratch,
        log_socket,
        *argv,
    ]


# -- kernel calls an attacker makes ----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_EXCHANGE = 2
PTRACE_ATTACH = 16
PTRACE_SEIZE = 0x4206


def rename_exchange(a: str, b: str) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically."""
    if _libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ptrace(request: int, pid: int) -> int:
    """ptrace(request, pid, 0, 0); returns 0 or -errno."""
    _libc.ptrace.restype = ctypes.c_long
    rc = _libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None)
    return 0 if rc == 0 else -ctypes.get_errno()
