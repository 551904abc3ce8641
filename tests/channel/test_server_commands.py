"""How the helper's server schedules commands (OP_EXEC) from a busy client.

Real sockets and threads: a HelperServer in a thread over a socketpair,
fed raw request batches, with a dispatch function that stands in for the
command runner and records how many commands run at once.
"""

from __future__ import annotations

import socket
import threading
import time

from privsepd.channel import server as server_module
from privsepd.channel.protocol import OP_EXEC, ClientProtocol, ServerProtocol
from privsepd.channel.server import EXEC_PARALLEL, HelperServer


class Recorder:
    """A dispatch that runs every request for ``seconds``, counting overlaps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __call__(self, request):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
        return True, [0, b"", b""]


def run_batch(dispatch, n: int, **kwargs) -> float:
    """Send ``n`` commands in one write; return the seconds until all replies arrived."""
    client_sock, server_sock = socket.socketpair()
    kwargs.setdefault("max_workers", 16)
    server = HelperServer(server_sock, ServerProtocol("t"), dispatch, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proto = ClientProtocol("t")
        client_sock.settimeout(10)
        client_sock.sendall(proto.hello())
        proto.receive_data(client_sock.recv(4096))
        batch = b"".join(proto.request(i, OP_EXEC, "true", ["true"], {}) for i in range(1, n + 1))
        start = time.monotonic()
        client_sock.sendall(batch)
        done: set[int] = set()
        while len(done) < n:
            data = client_sock.recv(65536)
            assert data, "the server closed before answering every command"
            done.update(e.id for e in proto.receive_data(data) if hasattr(e, "id"))
        return time.monotonic() - start
    finally:
        client_sock.close()
        server_sock.close()


def test_fast_commands_run_at_most_exec_parallel_at_once_plus_the_reader(monkeypatch):
    # More commands at once than CPUs only make the worker threads fight over
    # the GIL. SLOW_CALL is raised so that no 20 ms command counts as slow
    # even on a loaded machine.
    monkeypatch.setattr(server_module, "SLOW_CALL", 1.0)
    recorder = Recorder(0.02)
    run_batch(recorder, 12)
    assert 2 <= recorder.most <= EXEC_PARALLEL + 1


def test_commands_beyond_the_cap_start_once_the_running_ones_are_slow():
    # Nine 0.3 s commands: held to EXEC_PARALLEL + 1 at a time they would
    # take three rounds (0.9 s on 2 CPUs); a command running longer than
    # SLOW_CALL stops counting, so all of them overlap.
    recorder = Recorder(0.3)
    elapsed = run_batch(recorder, 9)
    assert recorder.most == 9
    assert elapsed < 0.75, f"nine 0.3 s commands took {elapsed:.2f} s"


def test_a_server_given_a_higher_cap_runs_up_to_that_many_fast_commands_at_once(monkeypatch):
    # The helper raises the cap when starting a command releases the GIL
    # (libc posix_spawn): more fast commands overlap, still never more than
    # the cap plus the reader.
    monkeypatch.setattr(server_module, "SLOW_CALL", 1.0)
    cap = EXEC_PARALLEL + 4
    recorder = Recorder(0.05)
    run_batch(recorder, cap + 6, exec_parallel=cap, max_workers=cap + 4)
    assert EXEC_PARALLEL + 1 < recorder.most <= cap + 1
