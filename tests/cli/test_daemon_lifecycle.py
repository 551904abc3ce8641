"""``privsepd serve`` under an operator's hands and under faults: readiness,
SIGTERM, SIGHUP, a second instance, the socket directory, status, idle and
flooding clients, slow-drip peers.

Every test runs the real daemon as a process, with real signals and real
sockets; helpers are real scoped processes (root required).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import cpython_calibrated, in_child

from privsepd import (
    CallTimeout,
    HandshakeError,
    HelperDiedError,
    PolicyError,
    ProtocolError,
    UnknownFunctionError,
)
from privsepd.channel.protocol import OP_CALL, ClientProtocol
from privsepd.cli.status import fetch
from privsepd.context import Context
from privsepd.policy.native import parse_policy

MODULE = """
import os
import time

import privsepd

ctx = privsepd.Context("t-life")


@ctx.entrypoint
def echo(value):
    return value


@ctx.entrypoint
def nap(seconds):
    time.sleep(seconds)
    return seconds


@ctx.entrypoint
def getenv(name):
    return os.environ.get(name)
"""

POLICY = """
[context.t-life]
user = "nobody"
timeout = {timeout}
allow_uids = [65534]

[[function]]
context = "t-life"
name = "lifemod:echo"
strict = false

[[function]]
context = "t-life"
name = "lifemod:getenv"
strict = false
"""

NAP = """
[[function]]
context = "t-life"
name = "lifemod:nap"
strict = false
"""


class Serve:
    """One ``privsepd serve`` process with its policy, sockets and log."""

    def __init__(self, root, *args: str, timeout: float = 5.0, nap: bool = True) -> None:
        self.root = root
        self.mods = root / "mods"
        self.mods.mkdir(mode=0o755, exist_ok=True)
        (self.mods / "lifemod.py").write_text(MODULE)
        self.policy = root / "policy.toml"
        self.write_policy(timeout=timeout, nap=nap)
        self.sockets = root / "sock"
        self.path = str(self.sockets / "t-life.sock")
        self.args = args
        self.notify_path = str(root / f"notify-{time.monotonic_ns()}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(10)
        self.log = root / f"serve-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    def write_policy(self, timeout: float = 5.0, nap: bool = True, text: str | None = None) -> None:
        body = text if text is not None else POLICY.format(timeout=timeout) + (NAP if nap else "")
        tmp = self.root / "policy.toml.new"
        tmp.write_text(textwrap.dedent(body))
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.root / "policy.toml")

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "privsepd.cli.main",
            "serve",
            "--policy",
            str(self.policy),
            "--socket-dir",
            str(self.sockets),
            *self.args,
        ]

    def start(self, ready: bool = True) -> Serve:
        env = dict(os.environ, PYTHONPATH=str(self.mods), NOTIFY_SOCKET=self.notify_path)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stderr=log)
        if ready:
            self.wait_for("READY=1")
        return self

    def wait_for(self, word: str) -> str:
        """The next sd_notify message containing ``word`` (fails on timeout)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            if word in message.split("\n"):
                return message
        pytest.fail(f"no {word!r} from the daemon; log:\n{self.log.read_text()}")

    def status(self) -> dict:
        return fetch(str(self.sockets))

    def client(self, timeout: float = 10.0) -> Context:
        return Context("t-life", socket_path=self.path, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


@pytest.fixture
def serve(trusted_dir):
    made: list[Serve] = []

    def make(*args: str, **kwargs) -> Serve:
        made.append(Serve(trusted_dir, *args, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def call(ctx: Context, name: str, *args):
    return ctx._call(OP_CALL, f"lifemod:{name}", list(args), {})


def in_thread(fn, *args):
    box: list = []

    def run() -> None:
        try:
            box.append(fn(*args))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before or during the read
        return False


# -- readiness ------------------------------------------------------------------


def test_the_daemon_tells_systemd_it_is_ready_only_once_its_sockets_accept(serve):
    daemon = serve().start(ready=False)
    message = daemon.wait_for("READY=1")
    assert f"MAINPID={daemon.proc.pid}" in message
    ctx = daemon.client()
    assert call(ctx, "echo", "first") == "first"  # no retry, no sleep: it accepts
    ctx.stop()


def test_helpers_do_not_inherit_the_notify_socket(serve):
    daemon = serve().start()
    ctx = daemon.client()
    assert call(ctx, "getenv", "PATH")  # (the lookup works: the scrubbed environment keeps PATH)
    assert call(ctx, "getenv", "NOTIFY_SOCKET") is None
    ctx.stop()


# -- SIGTERM --------------------------------------------------------------------


def test_sigterm_lets_the_call_in_flight_answer_removes_the_sockets_and_exits_0(serve):
    daemon = serve().start()
    ctx = daemon.client()
    assert call(ctx, "echo", 1) == 1
    (helper,) = daemon.status()["contexts"][0]["helpers"]
    thread, box = in_thread(call, ctx, "nap", 1.0)
    time.sleep(0.3)
    daemon.proc.send_signal(signal.SIGTERM)
    assert "STOPPING=1" in daemon.wait_for("STOPPING=1")
    thread.join(10)
    assert box == [1.0]  # the reply was not lost
    assert daemon.proc.wait(10) == 0
    assert os.listdir(daemon.sockets) == [".lock"]  # no socket left to refuse clients
    assert not alive(helper["pid"])  # reaped by the daemon, not left to pid 1
    ctx.stop()


def test_sigterm_kills_a_helper_that_does_not_drain_by_the_deadline(serve):
    daemon = serve("--drain-timeout", "0.5").start()
    ctx = daemon.client()
    thread, box = in_thread(call, ctx, "nap", 30.0)
    time.sleep(0.3)
    (helper,) = daemon.status()["contexts"][0]["helpers"]
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - start < 3.0
    thread.join(10)
    assert isinstance(box[0], HelperDiedError)
    assert not alive(helper["pid"])
    ctx.stop()


# -- SIGHUP ---------------------------------------------------------------------


def test_sighup_reloads_policy_for_new_connections_while_existing_ones_keep_theirs(serve):
    daemon = serve(nap=False).start()
    old = daemon.client()
    assert call(old, "echo", 1) == 1
    with pytest.raises(UnknownFunctionError):
        call(old, "nap", 0)
    daemon.write_policy(nap=True)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    new = daemon.client()
    assert call(new, "nap", 0) == 0
    with pytest.raises(UnknownFunctionError):
        call(old, "nap", 0)  # its helper keeps the policy it started with
    status = daemon.status()
    assert status["policy"]["last_reload"]["ok"] is True
    generations = sorted(h["policy_generation"] for h in status["contexts"][0]["helpers"])
    assert generations == [1, 2]
    old.stop()
    new.stop()


@pytest.mark.parametrize("breakage", ["syntax", "unsafe-mode", "unknown-function"])
def test_sighup_with_a_bad_policy_is_refused_with_a_log_line_and_the_old_one_serves(
    serve, breakage
):
    daemon = serve(nap=False).start()
    if breakage == "syntax":
        daemon.write_policy(text="[context.t-life\n")
    elif breakage == "unsafe-mode":
        os.chmod(daemon.policy, 0o666)
    else:
        daemon.write_policy(text=POLICY.format(timeout=5) + NAP.replace("nap", "nope"))
    daemon.proc.send_signal(signal.SIGHUP)
    assert "STATUS=reload refused; previous policy serving" in daemon.wait_for("READY=1")
    assert "reload refused, the previous policy keeps serving" in daemon.log.read_text()
    status = daemon.status()
    assert status["policy"]["last_reload"]["ok"] is False
    assert status["daemon"]["policy_generation"] == 1
    ctx = daemon.client()
    assert call(ctx, "echo", "old policy") == "old policy"
    ctx.stop()


# -- one daemon per socket directory ------------------------------------------------


def test_a_second_daemon_on_the_same_socket_directory_refuses_and_leaves_the_live_sockets(serve):
    first = serve().start()
    second = serve()
    out = subprocess.run(second.command(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"another privsepd serve (pid {first.proc.pid}) is serving" in out.stderr
    ctx = first.client()
    assert call(ctx, "echo", "still mine") == "still mine"
    ctx.stop()


@pytest.mark.parametrize(
    "owner, mode, ok",
    [
        (0, 0o755, True),
        (0, 0o750, True),
        (0, 0o775, False),
        (0, 0o757, False),
        (65534, 0o755, False),
    ],
    ids=["root-0755", "root-0750", "group-writable", "world-writable", "not-root"],
)
def test_a_pre_existing_socket_directory_must_be_root_owned_and_0755_or_stricter(
    serve, owner, mode, ok
):
    daemon = serve()
    daemon.sockets.mkdir()
    os.chown(daemon.sockets, owner, owner)
    os.chmod(daemon.sockets, mode)
    if ok:
        daemon.start()
        ctx = daemon.client()
        assert call(ctx, "echo", 1) == 1
        ctx.stop()
        return
    out = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "socket directory" in out.stderr and str(daemon.sockets) in out.stderr
    assert os.listdir(daemon.sockets) == []  # nothing created in it


def test_a_socket_directory_that_is_a_symlink_is_refused(serve, trusted_dir):
    daemon = serve()
    target = trusted_dir / "elsewhere"
    target.mkdir(mode=0o755)
    daemon.sockets.symlink_to(target)
    out = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "not a directory (a symlink?)" in out.stderr


# -- status ---------------------------------------------------------------------


def test_status_shows_contexts_sockets_helpers_sandbox_and_policy_stamps(serve):
    daemon = serve().start()
    ctx = daemon.client()
    for i in range(3):
        call(ctx, "echo", i)
    out = subprocess.run(
        [sys.executable, "-m", "privsepd.cli.main", "status", "--json"]
        + ["--socket-dir", str(daemon.sockets)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    (context,) = status["contexts"]
    assert context["name"] == "t-life" and context["socket"] == daemon.path
    assert context["sandbox"]["capabilities"] == []
    assert context["sandbox"]["uid"] == 65534
    assert context["allow_uids"] == [65534]
    (helper,) = context["helpers"]
    assert (helper["peer_uid"], helper["peer_pid"]) == (0, os.getpid())
    assert (helper["served"], helper["in_flight"], helper["abandoned"]) == (3, 0, 0)
    assert alive(helper["pid"])
    (stamp,) = status["policy"]["files"]
    assert stamp["path"] == str(daemon.policy)
    assert stamp["sha256"] == hashlib.sha256(daemon.policy.read_bytes()).hexdigest()
    assert status["policy"]["last_reload"] is None
    human = subprocess.run(
        [sys.executable, "-m", "privsepd.cli.main", "status", "--socket-dir", str(daemon.sockets)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"context t-life: {daemon.path}" in human.stdout
    assert f"pid {helper['pid']}: peer uid 0" in human.stdout and "served 3" in human.stdout
    ctx.stop()


@cpython_calibrated
def test_status_counts_calls_in_flight_and_those_running_past_the_context_timeout(serve):
    daemon = serve(timeout=0.5).start()
    ctx = daemon.client(timeout=10)
    thread, box = in_thread(call, ctx, "nap", 1.5)
    time.sleep(0.2)
    (helper,) = daemon.status()["contexts"][0]["helpers"]
    assert (helper["in_flight"], helper["abandoned"]) == (1, 0)
    time.sleep(0.6)
    (helper,) = daemon.status()["contexts"][0]["helpers"]
    assert (helper["in_flight"], helper["abandoned"]) == (1, 1)
    thread.join(10)
    ctx.stop()


def test_status_is_for_root_only(serve):
    daemon = serve().start()
    control = str(daemon.sockets / ".control")

    def as_nobody() -> str:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(control)
        except PermissionError:
            return "refused"
        return "connected"

    assert in_child(as_nobody) == "refused"


def test_status_says_when_no_daemon_runs(trusted_dir):
    out = subprocess.run(
        [sys.executable, "-m", "privsepd.cli.main", "status", "--socket-dir", str(trusted_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 3 and "no privsepd serve is running" in out.stderr


# -- idle connections and floods --------------------------------------------------


def test_idle_connections_of_a_uid_at_its_limit_make_room_for_its_real_client(serve):
    daemon = serve("--max-helpers-per-uid", "4", "--idle-evict-after", "0.3").start()
    idle = [daemon.client() for _ in range(4)]
    for ctx in idle:
        ctx.start()  # handshake done, then nothing
    time.sleep(0.5)
    real = daemon.client()
    assert call(real, "echo", "real") == "real"
    # The evicted client lost nothing: its next call goes to a new helper
    # (making room in turn, once the others have been idle long enough).
    time.sleep(0.4)
    for ctx in idle:
        assert call(ctx, "echo", "back") == "back"
    for ctx in [*idle, real]:
        ctx.stop()


def test_helpers_with_calls_in_flight_are_never_evicted(serve):
    daemon = serve("--max-helpers-per-uid", "2", "--idle-evict-after", "0.2").start()
    busy = [daemon.client() for _ in range(2)]
    threads = [in_thread(call, ctx, "nap", 1.5) for ctx in busy]
    time.sleep(0.5)
    with pytest.raises(HandshakeError, match=r"already has 2 helper\(s\), none idle"):
        daemon.client().start()
    for thread, box in threads:
        thread.join(10)
        assert box == [1.5]
    for ctx in busy:
        ctx.stop()


def test_a_flood_of_idle_half_handshakes_does_not_lock_out_a_real_client(serve):
    daemon = serve("--max-helpers-per-uid", "8", "--idle-evict-after", "0.3").start()
    flood = []
    for _ in range(8):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(daemon.path)
        sock.sendall(ClientProtocol("t-life").hello()[:5])  # and never the rest
        flood.append(sock)
    # Each idle half-handshake's helper becomes evictable 0.3 s after the
    # daemon forked it (later than the connect when the machine is loaded):
    # a real client gets in once one is, and is never locked out for good.
    deadline = time.monotonic() + 10
    while True:
        real = daemon.client()
        try:
            assert call(real, "echo", "in") == "in"
            break
        except HandshakeError as exc:
            assert "none idle" in str(exc), exc
            assert time.monotonic() < deadline, f"locked out for 10 s: {exc}"
            time.sleep(0.1)
        finally:
            real.stop()
    for sock in flood:
        sock.close()


def test_a_connect_and_close_flood_does_not_lock_out_a_real_client(serve):
    daemon = serve().start()
    stop = time.monotonic() + 2.0
    flooded = [0]

    def flood() -> None:
        while time.monotonic() < stop:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(daemon.path)
                flooded[0] += 1
            except OSError:
                pass
            sock.close()

    floods = [threading.Thread(target=flood) for _ in range(4)]
    for t in floods:
        t.start()
    real = daemon.client()
    done = 0
    while time.monotonic() < stop:
        real.stop()  # a fresh connection each time, in the middle of the flood
        assert call(real, "echo", done) == done
        done += 1
    for t in floods:
        t.join()
    assert flooded[0] > 50 and done > 5
    real.stop()


# -- slow peers -------------------------------------------------------------------


def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    start = time.monotonic()
    sock.settimeout(limit)
    said = b""
    while chunk := sock.recv(4096):
        said += chunk
    return time.monotonic() - start, said


def test_a_client_dripping_its_handshake_is_cut_off_at_the_deadline(serve):
    daemon = serve("--handshake-timeout", "1").start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.path)
    hello = ClientProtocol("t-life").hello()
    stop = threading.Event()

    def drip() -> None:
        for i in range(len(hello)):  # a byte every 0.25 s: 6 s in all
            if stop.wait(0.25):
                return
            try:
                sock.send(hello[i : i + 1])
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    elapsed, said = _closed_after(sock, 10)
    stop.set()
    assert 0.8 < elapsed < 2.5, elapsed
    assert b"no handshake within 1s" in said
    sock.close()


def test_a_half_sent_frame_does_not_hold_a_helper(serve):
    daemon = serve("--frame-timeout", "1").start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.path)
    proto = ClientProtocol("t-life")
    sock.sendall(proto.hello())
    sock.settimeout(10)
    proto.receive_data(sock.recv(4096))  # welcome
    (helper,) = daemon.status()["contexts"][0]["helpers"]
    frame = proto.request(1, OP_CALL, "lifemod:echo", ["x" * 1000], {})
    sock.sendall(frame[: len(frame) // 2])
    elapsed, said = _closed_after(sock, 10)
    assert 0.8 < elapsed < 2.5, elapsed
    assert b"frame not completed within 1s" in said
    deadline = time.monotonic() + 5
    while alive(helper["pid"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sock.close()


def test_a_call_timing_out_in_daemon_mode_leaves_the_daemon_serving(serve):
    daemon = serve().start()
    ctx = daemon.client(timeout=0.2)
    with pytest.raises(CallTimeout):
        call(ctx, "nap", 0.6)
    assert call(ctx, "echo", "after") == "after"
    ctx.stop()


# -- the frame limit ----------------------------------------------------------------


def test_a_contexts_max_frame_in_policy_lets_its_helpers_take_larger_frames(serve):
    daemon = serve()
    daemon.write_policy(
        text=POLICY.format(timeout=5).replace("timeout = 5", "timeout = 5\nmax_frame = 8388608")
    )
    daemon.start()
    six_mb = b"z" * (6 << 20)
    big = Context("t-life", socket_path=daemon.path, max_frame=8 << 20)
    assert call(big, "echo", six_mb) == six_mb
    assert daemon.status()["contexts"][0]["max_frame"] == 8 << 20
    big.stop()


def test_a_frame_over_the_helpers_max_frame_is_refused_by_the_helper(serve):
    daemon = serve().start()  # the default: 4 MiB
    big = Context("t-life", socket_path=daemon.path, max_frame=8 << 20)
    with pytest.raises(ProtocolError, match="exceeds limit of 4194304"):
        call(big, "echo", b"z" * (6 << 20))
    big.stop()


@pytest.mark.parametrize("value", ["1024", "1073741824", '"8MiB"', "true"])
def test_max_frame_in_policy_must_be_a_byte_count_within_bounds(value):
    with pytest.raises(PolicyError, match="max_frame"):
        parse_policy(f"[context.x]\nmax_frame = {value}\n", "/etc/privsepd/policy.toml")


def test_reloads_do_not_leak_the_daemons_descriptors(serve, trusted_dir):
    audit_dir = trusted_dir / "audit"
    audit_dir.mkdir(mode=0o750)
    policy = POLICY.format(timeout=5).replace(
        "timeout = 5", f'timeout = 5\naudit = "{audit_dir}/audit.jsonl"'
    )
    daemon = serve()
    daemon.write_policy(text=policy)
    daemon.start()
    fds = f"/proc/{daemon.proc.pid}/fd"
    before = sorted(os.listdir(fds))
    for _ in range(5):
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("READY=1")
    assert daemon.status()["policy"]["last_reload"]["ok"] is True
    assert len(os.listdir(fds)) <= len(before)  # (5 reloads used to add 5)
    ctx = daemon.client()
    assert call(ctx, "echo", "audited") == "audited"  # the new sink works
    ctx.stop()
    assert "connect" in (audit_dir / "audit.jsonl").read_text()
