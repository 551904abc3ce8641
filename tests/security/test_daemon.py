"""Red team, daemon and peers: who may talk to a helper, and who may pose as one.

Attackers here are other local users: an unauthorized uid knocking on
``privsepd serve``, a peer flooding it with idle connections, an ordinary
user posing as the daemon, a user-owned directory on the daemon's path.
Each test shows the attempt fail, a good call still served, and the record
of the attempt: the daemon's audit file where the daemon decides; where the
refusal happens before any audit sink exists (a daemon refusing to start, a
client refusing a server) the record is the refusal message that names the
culprit, and the test says so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from privsepd.channel.protocol import OP_CALL, ServerProtocol, encode_frame
from privsepd.context import Context

from .attack import RawPeer, as_user, fn, frame, outcome, packed, wait_for
from .conftest import TESTS_DIR, daemon_listening, spawn_command, start_daemon, write_policy

NOBODY = 65534
USER = 1000  # an ordinary account that no policy here admits


def client(target) -> Context:
    return Context("t-sec", timeout=10, socket_path=target.socket)


def echo_as(uid: int, gid: int, ctx: Context) -> str:
    return as_user(uid, gid, lambda: outcome(lambda: ctx._call(OP_CALL, fn("echo"), ["x"], {})))


# -- who may connect -------------------------------------------------------------------


def test_daemon_peer_uid_not_in_the_allow_list_is_refused(daemon):
    out = echo_as(USER, USER, client(daemon))
    assert out.startswith("HandshakeError") and f"peer uid {USER} gid {USER}" in out, out
    daemon.good_call()
    daemon.audit.expect(decision="deny", op="connect", peer_uid=USER, error="not allowed")


def test_daemon_gid_allow_list_admits_no_uid_that_has_the_same_number(targets):
    daemon = targets.open("daemon", peers="allow_gids = [4242]")
    out = echo_as(4242, USER, client(daemon))  # uid 4242, primary gid 1000
    assert out.startswith("HandshakeError") and "peer uid 4242 gid 1000" in out, out
    assert echo_as(USER, 4242, client(daemon)) == "ok ['x']"  # the gid itself is admitted
    daemon.good_call()
    daemon.audit.expect(decision="deny", op="connect", peer_uid=4242, peer_gid=USER)


def test_spawn_peer_not_in_the_uid_allow_list_is_refused(spawn):
    out = spawn_as_peer(spawn.policy, USER)
    assert out.startswith("HandshakeError") and f"peer uid {USER}" in out, out
    spawn.good_call()  # the record of the refusal is the message (see the NEW test below)


def test_spawn_refused_peer_is_audited(spawn):
    out, pid = spawn_as_peer(spawn.policy, USER, with_pid=True)
    assert out.startswith("HandshakeError"), out
    spawn.good_call()
    record = spawn.audit.expect(decision="deny", op="connect", peer_uid=USER)
    assert {k: record.get(k) for k in ("context", "decision", "op", *PEER_FIELDS)} == {
        "context": "t-sec",
        "decision": "deny",
        "op": "connect",
        "peer_uid": USER,
        "peer_gid": USER,
        "peer_pid": pid,
    }, record
    assert f"peer uid {USER} gid {USER}" in record["error"] and "not allowed" in record["error"]


def test_spawn_refusal_before_the_policy_is_read_is_audited_with_its_cause(spawn, capfd):
    """Refused before any policy is read (interpreter variables through sudo): still recorded."""
    sudo_like = ["env", "SUDO_UID=1000", "SUDO_USER=svc", "PYTHONPATH=/tmp"]
    command = sudo_like + spawn_command(spawn.policy, isolated=False)
    ctx = Context("t-sec", timeout=10, helper_command=command)
    try:
        ctx.start()
        raise AssertionError("ATTACK SUCCEEDED: the helper served with PYTHONPATH from sudo")
    except AssertionError:
        raise
    except Exception as exc:
        assert "reached a root interpreter" in str(exc) + capfd.readouterr().err, exc
    finally:
        ctx.stop()
    spawn.good_call()
    record = spawn.audit.expect(decision="deny", error="PYTHONPATH reached a root interpreter")
    assert {k: record.get(k) for k in ("context", "decision", "op", *PEER_FIELDS)} == {
        "context": "t-sec",
        "decision": "deny",
        "op": "connect",
        "peer_uid": 0,
        "peer_gid": 0,
        "peer_pid": os.getpid(),  # the service made the socketpair the helper got as stdin
    }, record


PEER_FIELDS = ("peer_uid", "peer_gid", "peer_pid")


def spawn_as_peer(policy: str, uid: int, with_pid: bool = False) -> Any:
    """The spawn-mode channel as a service running as ``uid`` builds it.

    The service creates the socketpair (so SO_PEERCRED names it) and sudo
    hands one end to ``privsepd helper`` as stdin; here the child sends
    that end to us over SCM_RIGHTS and we start the helper as root.
    ``with_pid``: also return the service's pid (what the helper should record).
    """
    courier, courier_child = socket.socketpair()

    def service() -> str:
        mine, theirs = socket.socketpair()
        socket.send_fds(courier_child, [b"fd"], [theirs.fileno()])
        theirs.close()
        peer = RawPeer(mine, "t-sec")
        peer.hello()
        msg = peer.next_message(15)
        if msg is not None and len(msg) == 5 and msg[3] == "err":
            return [os.getpid(), f"HandshakeError: {msg[4]}"]
        return [os.getpid(), f"ok {msg!r}"]

    result: list = []
    thread = threading.Thread(target=lambda: result.append(as_user(uid, uid, service)))
    thread.start()
    _, fds, _, _ = socket.recv_fds(courier, 16, 1)
    proc = subprocess.Popen(
        [*spawn_command(policy), "--context", "t-sec"], stdin=fds[0], stderr=subprocess.DEVNULL
    )
    os.close(fds[0])
    thread.join(30)
    proc.kill()
    proc.wait()
    courier.close()
    courier_child.close()
    pid, out = result[0]
    return (out, pid) if with_pid else out


# -- floods ------------------------------------------------------------------------------------


def test_daemon_idle_connection_flood_is_capped_per_uid_and_recorded(targets):
    daemon = targets.open("daemon", args=("--max-helpers-per-uid", "4"))
    flood = []
    for _ in range(12):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.socket)
        flood.append(s)
    refusals = wait_for(
        lambda: len(daemon.audit.find(decision="deny", error="already has 4 helper(s)")) >= 8,
        5,
        "8 refusals",
    )
    assert refusals
    # Other users are not starved by one uid's flood.
    assert echo_as(NOBODY, NOBODY, client(daemon)) == "ok ['x']"
    for s in flood:
        s.close()
    wait_for(lambda: outcome(daemon.good_call) == "ok None", 10, "a good call after the flood")
    assert len(daemon.audit.find(decision="allow", op="connect", peer_uid=0)) <= 4 + 1


def test_daemon_connection_flood_from_an_unauthorized_uid_is_refused_and_recorded(daemon):
    path = daemon.socket

    def knock() -> int:
        refused = 0
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            s.close()
            refused += b"not allowed to use context" in data
        return refused

    assert as_user(USER, USER, knock) == 200
    daemon.good_call()
    assert len(daemon.audit.find(decision="deny", op="connect", peer_uid=USER)) == 200


# -- deadlines ------------------------------------------------------------------------------------

#: The daemon's deadlines are shortened for these tests (the defaults are 10 s).
DEADLINE = 1.0


def test_daemon_half_sent_frame_is_dropped_at_its_deadline(targets):
    daemon = targets.open("daemon", args=("--frame-timeout", str(DEADLINE)))
    peer = daemon.raw()
    peer.send(frame(packed([1, "call", fn("echo"), ["half-token"], {}]))[:-5])
    peer.expect_closed(within=DEADLINE + 1.5)
    peer.expect_clean_exit()
    daemon.good_call()
    daemon.audit.expect(decision="protocol-violation")
    assert not daemon.audit.mentions("half-token")


def test_daemon_handshake_dripped_byte_by_byte_is_cut_at_its_deadline(targets):
    daemon = targets.open("daemon", args=("--handshake-timeout", str(DEADLINE)))
    peer = daemon.connect()
    hello = encode_frame(["privsepd", 1, "t-sec"])
    start = time.monotonic()
    for byte in hello[:-1]:  # never completes the hello, never goes quiet
        if peer.hung_up() or time.monotonic() - start > DEADLINE + 2:
            break
        try:
            peer.send(bytes([byte]))
        except OSError:
            break
        time.sleep(0.2)
    held = time.monotonic() - start
    assert peer.hung_up(), f"ATTACK SUCCEEDED: connection still held after {held:.1f}s"
    assert held < DEADLINE + 1.5, f"connection held {held:.1f}s past a {DEADLINE:g} s deadline"
    daemon.good_call()
    daemon.audit.expect(decision="protocol-violation", error="handshake")


@pytest.mark.parametrize(
    "owner, mode", [(NOBODY, 0o755), (0, 0o777), (0, 0o775)], ids=["nobody-owned", "0777", "0775"]
)
def test_daemon_refuses_a_socket_directory_others_can_write(trusted_dir, daemon, owner, mode):
    sockets = trusted_dir / f"sock-{owner}-{mode:o}"
    sockets.mkdir()
    os.chown(sockets, owner, owner)
    sockets.chmod(mode)
    policy = write_policy(trusted_dir / "dirs.toml", str(trusted_dir / "dirs.jsonl"))
    log = str(trusted_dir / "dirs.log")
    proc = start_daemon(policy, str(sockets), log)
    if serves(proc, str(sockets / "t-sec.sock")):
        raise AssertionError(f"ATTACK SUCCEEDED: daemon serves from {sockets} ({mode:o})")
    assert proc.returncode != 0 and str(sockets) in open(log).read()
    daemon.good_call()  # a daemon with a proper socket directory serves


def test_client_refuses_a_daemon_socket_served_by_an_ordinary_user(trusted_dir, daemon):
    fake_dir = trusted_dir / "fake"
    fake_dir.mkdir()
    os.chown(fake_dir, NOBODY, NOBODY)
    path = str(fake_dir / "t-sec.sock")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the impostor, as nobody
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            serve_forged_replies(path, ready_w)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"!"
        victim = Context("t-sec", timeout=5, socket_path=path)
        out = outcome(lambda: victim._call(OP_CALL, fn("echo"), ["card-number"], {}))
        victim.stop()
        assert not out.startswith("ok"), f"ATTACK SUCCEEDED: the impostor answered {out}"
        assert out.startswith("HandshakeError") and f"uid {NOBODY}" in out, out
    finally:
        os.close(ready_r)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    daemon.good_call()


def serves(proc: subprocess.Popen, socket_path: str, timeout: float = 10.0) -> bool:
    """Whether a just-started daemon came up on ``socket_path`` (it is then killed) or exited."""
    wait_for(
        lambda: proc.poll() is not None or daemon_listening(socket_path), timeout, "the daemon"
    )
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


def serve_forged_replies(path: str, ready: int) -> None:
    """A fake privsepd: welcome anyone, answer every call with 'forged'."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    os.write(ready, b"!")
    listener.settimeout(10)
    conn, _ = listener.accept()
    conn.settimeout(10)
    proto = ServerProtocol("t-sec")
    while data := conn.recv(65536):
        for request in proto.receive_data(data):
            conn.sendall(proto.reply_ok(request.id, "forged"))
        conn.sendall(proto.take_output())


def test_daemon_refuses_to_import_a_module_an_ordinary_user_owns(trusted_dir, daemon):
    pylib = trusted_dir / "pylib"
    pylib.mkdir()
    marker = trusted_dir / "module-ran-as-root"
    module = pylib / "evilmod.py"
    module.write_text(
        "import os\n"
        f"open({str(marker)!r}, 'w').write(str(os.geteuid()))\n"
        "from privsepd.context import Context\n"
        "ctx = Context('t-evil')\n"
        "@ctx.entrypoint\n"
        "def pwn():\n"
        "    return 'pwned'\n"
    )
    for p in (pylib, module):
        os.chown(p, USER, USER)
    policy = write_policy(
        trusted_dir / "evil.toml",
        str(trusted_dir / "evil.jsonl"),
        '\n[context.t-evil]\nuser = "nobody"\n\n'
        '[[function]]\ncontext = "t-evil"\nname = "evilmod:pwn"\n',
    )
    log = str(trusted_dir / "evil.log")
    env = dict(os.environ, PYTHONPATH=f"{TESTS_DIR}:{pylib}")
    proc = start_daemon(policy, str(trusted_dir / "evil-sock"), log, env=env)
    serving = serves(proc, str(trusted_dir / "evil-sock" / "t-evil.sock"))
    assert not marker.exists(), f"ATTACK SUCCEEDED: {module} ran as uid {marker.read_text()}"
    assert not serving and proc.returncode != 0 and str(module) in open(log).read()
    daemon.good_call()
