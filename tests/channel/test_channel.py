"""Channel I/O: the client multiplexer against a helper server in a thread.

These run the real socket code over a socketpair with the server in a
thread, so they need no root; the forked, scoped helper is covered in
test_helper.py.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from privsepd.channel.client import ClientChannel
from privsepd.channel.protocol import ClientProtocol, Limits, Request, ServerProtocol
from privsepd.channel.server import HelperServer
from privsepd.errors import (
    CallTimeout,
    HandshakeError,
    HelperDiedError,
    ProtocolError,
    RemoteError,
    exception_to_wire,
)


def dispatch(request: Request):
    try:
        if request.name == "echo":
            return True, request.args
        if request.name == "sleep":
            time.sleep(request.args[0])
            return True, request.args[0]
        if request.name == "fail":
            raise FileNotFoundError(2, "No such file or directory", "/nope")
        if request.name == "weird":

            class Weird(Exception):
                pass

            raise Weird("boom")
        raise KeyError(request.name)
    except Exception as exc:
        return False, exception_to_wire(exc)


class Pair:
    def __init__(self, limits: Limits | None = None, server_context: str = "t"):
        self.limits = limits or Limits()
        self.client_sock, self.server_sock = socket.socketpair()
        self.violations: list[str] = []
        self.server = HelperServer(
            self.server_sock,
            ServerProtocol(server_context, self.limits),
            dispatch,
            max_workers=8,
            on_violation=self.violations.append,
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.channel = ClientChannel(self.client_sock, "t", ClientProtocol("t", self.limits))

    def close(self):
        self.channel.close()
        self.server_sock.close()


@pytest.fixture
def pair():
    p = Pair()
    p.channel.handshake(timeout=5)
    yield p
    p.close()


def test_call_returns_the_helpers_result(pair):
    assert pair.channel.call("call", "echo", [b"x", "y", 3], {}, timeout=5) == [b"x", "y", 3]


def test_allowlisted_exception_is_reraised_as_the_same_type_with_errno(pair):
    with pytest.raises(FileNotFoundError) as info:
        pair.channel.call("call", "fail", [], {}, timeout=5)
    assert info.value.errno == 2
    assert "/nope" in str(info.value)


def test_unlisted_exception_becomes_remote_error_with_name_and_message(pair):
    with pytest.raises(RemoteError, match="Weird: boom"):
        pair.channel.call("call", "weird", [], {}, timeout=5)


def test_replies_are_routed_to_their_own_callers_across_threads(pair):
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(200):
            got = pair.channel.call("call", "echo", [n, i], {}, timeout=10)
            if got != [n, i]:
                errors.append(f"thread {n} call {i} got {got}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_fast_call_overtakes_a_slow_one(pair):
    done: list[str] = []
    slow = threading.Thread(
        target=lambda: done.append(str(pair.channel.call("call", "sleep", [2.0], {}, timeout=5)))
    )
    slow.start()
    time.sleep(0.05)
    assert pair.channel.call("call", "echo", ["fast"], {}, timeout=5) == ["fast"]
    assert done == []
    slow.join()
    assert done == ["2.0"]


def test_call_times_out_and_the_channel_stays_usable(pair):
    with pytest.raises(CallTimeout, match="within 0.1s"):
        pair.channel.call("call", "sleep", [0.4], {}, timeout=0.1)
    time.sleep(0.4)
    assert pair.channel.call("call", "echo", [1], {}, timeout=5) == [1]


def test_server_going_away_mid_call_fails_the_call_at_once():
    p = Pair()
    p.channel.handshake(timeout=5)
    result: list[BaseException] = []

    def call():
        try:
            p.channel.call("call", "sleep", [2], {}, timeout=10)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    p.server_sock.shutdown(socket.SHUT_RDWR)
    t.join(5)
    assert time.monotonic() - start < 1.0
    assert len(result) == 1 and isinstance(result[0], HelperDiedError)
    assert "1 call(s) in flight lost" in str(result[0])
    with pytest.raises(HelperDiedError):
        p.channel.call("call", "echo", [], {}, timeout=1)


def test_context_mismatch_fails_the_handshake_on_both_sides():
    p = Pair(server_context="other")
    with pytest.raises(HandshakeError, match="context mismatch"):
        p.channel.handshake(timeout=5)
    p.thread.join(2)
    assert p.violations and "context mismatch" in p.violations[0]


def raw_client(p: Pair) -> socket.socket:
    p.client_sock.sendall(ClientProtocol("t").hello())
    p.client_sock.settimeout(5)
    p.client_sock.recv(4096)
    return p.client_sock


def test_garbage_from_the_client_closes_the_connection_with_a_reason():
    p = Pair()
    sock = raw_client(p)
    sock.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    reply = sock.recv(4096)
    assert b"ProtocolError" in reply and b"malformed frame" in reply
    assert sock.recv(4096) == b""
    assert p.violations and "malformed frame" in p.violations[0]


def test_oversize_frame_from_the_client_closes_the_connection():
    p = Pair(limits=Limits(max_frame=1024))
    sock = raw_client(p)
    sock.sendall(struct.pack(">I", 10**6))
    reply = sock.recv(4096)
    assert b"exceeds limit of 1024" in reply
    assert sock.recv(4096) == b""


def test_client_refuses_to_send_an_oversize_frame_and_stays_usable():
    p = Pair(limits=Limits(max_frame=1024))
    p.channel.handshake(timeout=5)
    with pytest.raises(ProtocolError, match="exceeds limit"):
        p.channel.call("call", "echo", [b"x" * 4096], {}, timeout=5)
    assert p.channel.call("call", "echo", [1], {}, timeout=5) == [1]


def server_with(dispatch_fn, **kwargs):
    client_sock, server_sock = socket.socketpair()
    server = HelperServer(server_sock, ServerProtocol("t"), dispatch_fn, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return client_sock, server_sock, server


def test_caller_interrupted_while_reading_does_not_strand_the_others(pair):
    import signal

    class Interrupt(Exception):
        pass

    def boom(*_):
        raise Interrupt

    old = signal.signal(signal.SIGALRM, boom)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupt):
            pair.channel.call("call", "sleep", [0.3], {}, timeout=5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    start = time.monotonic()
    assert pair.channel.call("call", "echo", ["after"], {}, timeout=5) == ["after"]
    assert time.monotonic() - start < 1.0


def test_fast_reply_is_not_held_behind_a_slow_call_of_the_same_batch():
    client_sock, server_sock, _ = server_with(dispatch)
    proto = ClientProtocol("t")
    client_sock.sendall(proto.hello())
    client_sock.settimeout(5)
    proto.receive_data(client_sock.recv(4096))
    batch = proto.request(1, "call", "echo", ["fast"], {}) + proto.request(
        2, "call", "sleep", [2.0], {}
    )
    start = time.monotonic()
    client_sock.sendall(batch)
    events = []
    while not any(getattr(e, "id", None) == 1 for e in events):
        events += proto.receive_data(client_sock.recv(4096))
    assert time.monotonic() - start < 1.0  # the slow call takes 2 s
    client_sock.close()
    server_sock.close()


def test_send_that_misses_its_deadline_raises_call_timeout_and_keeps_the_stream_whole():
    client_sock, server_sock = socket.socketpair()
    channel = ClientChannel(client_sock, "t", ClientProtocol("t"))
    server_sock.sendall(_welcome())
    channel.handshake(timeout=5)
    # Nobody reads the helper end now: a 3 MiB request cannot be written.
    start = time.monotonic()
    with pytest.raises(CallTimeout, match="did not accept the request within 0.2s"):
        channel.call("call", "echo", [b"x" * (3 * 1024 * 1024)], {}, timeout=0.2)
    assert time.monotonic() - start < 1.0
    assert channel.failure is None
    # The unwritten rest stays queued: the next call sends it first, and the
    # helper side decodes both requests intact.
    result: list = []
    t = threading.Thread(
        target=lambda: result.append(channel.call("call", "echo", ["next"], {}, timeout=10))
    )
    t.start()
    decoded = []
    proto = ServerProtocol("t")  # reads the hello still in the buffer first
    server_sock.settimeout(10)
    while len(decoded) < 2:
        decoded += proto.receive_data(server_sock.recv(1 << 20))
    assert [r.args for r in decoded] == [[b"x" * (3 * 1024 * 1024)], ["next"]]
    server_sock.sendall(proto.reply_ok(decoded[1].id, ["next"]))
    t.join(5)
    assert result == [["next"]]
    client_sock.close()
    server_sock.close()


def _welcome() -> bytes:
    proto = ServerProtocol("t")
    proto.receive_data(ClientProtocol("t").hello())
    return proto.take_output()


def test_idle_workers_take_over_reading_from_a_slow_call(pair):
    # Grow the pool, let it go idle, then check a fast call is not stuck
    # behind a slow one on a single reader.
    threads = [
        threading.Thread(target=lambda: pair.channel.call("call", "sleep", [0.05], {}, timeout=5))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slow = threading.Thread(target=lambda: pair.channel.call("call", "sleep", [2], {}, timeout=5))
    slow.start()
    time.sleep(0.05)
    start = time.monotonic()
    assert pair.channel.call("call", "echo", ["quick"], {}, timeout=5) == ["quick"]
    assert time.monotonic() - start < 1.0  # the slow call takes 2 s
    slow.join()


def test_client_that_never_says_hello_is_disconnected_with_a_reason():
    client_sock, server_sock, server = server_with(dispatch, handshake_timeout=0.2)
    client_sock.settimeout(5)
    data = client_sock.recv(4096)
    assert b"no handshake within 0.2s" in data
    assert server.closed.wait(2)
    client_sock.close()
    server_sock.close()


def handshaken_raw_client(server_sock_dispatch):
    """A raw socket and a ClientProtocol past the handshake, against a server in a thread."""
    client_sock, server_sock = socket.socketpair()
    server = HelperServer(server_sock, ServerProtocol("t"), server_sock_dispatch, max_workers=8)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proto = ClientProtocol("t")
    client_sock.settimeout(5)
    client_sock.sendall(proto.hello())
    while not any(
        type(e).__name__ == "Welcome" for e in proto.receive_data(client_sock.recv(4096))
    ):
        pass
    return client_sock, proto


def test_a_burst_of_requests_in_one_write_gets_every_reply_under_its_own_id():
    sock, proto = handshaken_raw_client(dispatch)
    n = 64
    burst = b"".join(
        proto.request(rid, "call", "echo", [rid, "x" * rid], {}) for rid in range(1, n + 1)
    )
    sock.sendall(burst)  # one write: the helper reads many frames at once and batches replies
    replies = {}
    while len(replies) < n:
        data = sock.recv(65536)
        assert data, f"connection closed after {len(replies)} of {n} replies"
        for reply in proto.receive_data(data):
            assert reply.id not in replies, f"reply {reply.id} delivered twice"
            replies[reply.id] = reply
    assert sorted(replies) == list(range(1, n + 1))
    assert all(r.ok and r.result == [rid, "x" * rid] for rid, r in replies.items())


def test_a_burst_with_one_malformed_frame_fails_closed_and_runs_none_of_it():
    ran: list[int] = []

    def recording(request: Request):
        ran.append(request.args[0])
        return True, request.args

    sock, proto = handshaken_raw_client(recording)
    good = [proto.request(rid, "call", "echo", [rid], {}) for rid in (1, 2, 3)]
    sock.sendall(good[0] + good[1] + struct.pack(">I", 3) + b"\xc1\xc1\xc1" + good[2])
    reply = b""
    while True:
        data = sock.recv(4096)
        if not data:
            break
        reply += data
    assert b"ProtocolError" in reply and b"malformed frame" in reply
    assert ran == []  # the frames of the batch before the bad one did not run either
