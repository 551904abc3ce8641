"""Who may talk to whom: peers of the daemon and of a spawned helper, and the daemon itself.

Every peer is a real process with real credentials (setresuid/setresgid/
setgroups in a forked child, real accounts from useradd/groupadd where a
name is needed); the kernel reports them through SO_PEERCRED and
SO_PEERGROUPS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import in_child, unix_listening
from sysaccounts import system_group, system_user, unique

from privsepd import HandshakeError
from privsepd.channel.client import ClientChannel
from privsepd.channel.protocol import OP_CALL, OP_PING, ClientProtocol, ServerProtocol
from privsepd.context import Context
from privsepd.modes import DaemonMode

NOBODY = 65534
MODULE = "psd_peer_fns"
ENTRYPOINTS = """
import os

import privsepd

ctx = privsepd.Context("t-peers")


@ctx.entrypoint
def served() -> str:
    return f"served by uid {os.getuid()}"
"""


def function(context: str) -> str:
    """Each context gets its own copy of the entrypoint (policy names a function once)."""
    return f"{MODULE}_{context.replace('-', '_')}:served"


def write_policy(directory: Path, contexts: dict[str, str]) -> str:
    lib = directory / "lib"
    lib.mkdir(mode=0o755, exist_ok=True)
    text = ""
    for name, allow in contexts.items():
        module = lib / (function(name).split(":")[0] + ".py")
        module.write_text(ENTRYPOINTS)
        module.chmod(0o644)
        text += textwrap.dedent(
            f"""
            [context.{name}]
            user = "nobody"
            audit = "{directory}/audit.jsonl"
            {allow}

            [[function]]
            context = "{name}"
            name = "{function(name)}"
            """
        )
    path = directory / "policy.toml"
    path.write_text(text)
    path.chmod(0o644)
    return str(path)


SERVED = "ok served by uid 65534"


def start_daemon(directory: Path, policy: str, contexts: list[str]) -> subprocess.Popen:
    sockets = directory / "sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "privsepd.cli.main", "serve", "--policy", policy,
         "--socket-dir", str(sockets)],
        stderr=subprocess.PIPE,
        env={"PATH": os.defpath, "PYTHONPATH": str(directory / "lib")},
    )  # fmt: skip
    deadline = time.monotonic() + 20
    try:
        while not all(unix_listening(sockets / f"{name}.sock") for name in contexts):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    sockets.chmod(0o755)
    return proc


def call_as(path: str, context: str, uid: int, gid: int, groups: list[int]) -> str:
    """Call the policy function from a child with exactly these credentials."""
    ctx = Context(context, socket_path=path)

    def connect() -> str:
        try:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            return f"ok {ctx._call(OP_CALL, function(context), [], {})}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    return in_child(connect)


# -- allow_groups and allow_gids ----------------------------------------------------------


@pytest.fixture(scope="module")
def accounts():
    from conftest import require_root

    require_root()
    with system_group(unique("psdg")) as group:
        with system_user(unique("psdu"), "-G", group.gr_name) as user:
            yield group, user


@pytest.fixture(scope="module")
def daemon(accounts):
    import shutil
    import tempfile

    group, _ = accounts
    directory = Path(tempfile.mkdtemp(prefix="privsepd-peers-", dir="/run"))
    directory.chmod(0o755)
    policy = write_policy(
        directory,
        {
            "t-groups": f'allow_groups = ["{group.gr_name}"]',
            "t-gids": "allow_gids = [4711]",
        },
    )
    try:
        proc = start_daemon(directory, policy, ["t-groups", "t-gids"])
        try:
            yield directory / "sock"
        finally:
            proc.kill()
            proc.wait()
    finally:
        shutil.rmtree(directory)


def test_a_supplementary_member_of_an_allowed_group_is_admitted(daemon, accounts):
    group, user = accounts
    assert user.pw_gid != group.gr_gid  # primary group is the user's own
    out = call_as(str(daemon / "t-groups.sock"), "t-groups", user.pw_uid, user.pw_gid,
                  [user.pw_gid, group.gr_gid])  # fmt: skip
    assert out == SERVED


def test_the_same_user_without_the_group_is_refused(daemon, accounts):
    group, user = accounts
    out = call_as(str(daemon / "t-groups.sock"), "t-groups", user.pw_uid, user.pw_gid,
                  [user.pw_gid])  # fmt: skip
    assert out.startswith("HandshakeError") and f"peer uid {user.pw_uid}" in out


def test_the_group_as_primary_gid_is_admitted_as_sg_would_make_it(daemon, accounts):
    group, user = accounts
    out = call_as(str(daemon / "t-groups.sock"), "t-groups", user.pw_uid, group.gr_gid, [])
    assert out == SERVED


def test_allow_gids_admits_a_peer_by_its_gid(daemon):
    assert call_as(str(daemon / "t-gids.sock"), "t-gids", 4713, 4711, []) == SERVED


def test_allow_gids_is_not_compared_with_the_peers_uid(daemon):
    out = call_as(str(daemon / "t-gids.sock"), "t-gids", 4711, 4712, [])
    assert out.startswith("HandshakeError") and "peer uid 4711 gid 4712" in out


def test_allow_gids_admits_a_peer_holding_the_gid_as_a_supplementary_group(daemon):
    out = call_as(str(daemon / "t-gids.sock"), "t-gids", 4713, 4712, [4711])
    assert out == SERVED


# -- spawn mode: the peer of the helper's stdin ------------------------------------------


def spawn_as(policy: str, context: str, uid: int) -> str:
    """A client running as ``uid`` hands its socket to a root ``privsepd helper``.

    The client makes the socketpair after dropping to ``uid`` (SO_PEERCRED of
    a socketpair names its creator) and passes one end to this root process,
    which runs the helper with it as standard input, as sudo would.
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    protocol = ClientProtocol(context)

    def client() -> str:
        parent_end.close()
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        socket.send_fds(child_end, [b"x"], [theirs.fileno()])
        theirs.close()
        channel = ClientChannel(mine, context, protocol)
        try:
            channel.handshake(timeout=20)
            return f"ok {channel.call(OP_CALL, function(context), [], {}, 20)}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            channel.close()

    result: list = []
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the client child
        try:
            out = client()
        except BaseException as exc:
            out = f"child failed: {exc!r}"
        os.write(child_end.fileno(), out.encode()[:65536])
        os._exit(0)
    child_end.close()
    _, fds, _, _ = socket.recv_fds(parent_end, 16, 1)
    helper = subprocess.Popen(
        [sys.executable, "-m", "privsepd.cli.main", "helper", "--context", context,
         "--policy", policy],
        stdin=fds[0],
        stderr=subprocess.PIPE,
        env={"PATH": os.defpath, "PYTHONPATH": str(Path(policy).parent / "lib")},
    )  # fmt: skip
    os.close(fds[0])
    parent_end.settimeout(60)
    while chunk := parent_end.recv(65536):
        result.append(chunk)
    os.waitpid(pid, 0)
    helper.wait(30)
    parent_end.close()
    return b"".join(result).decode()


def test_spawn_mode_admits_a_peer_whose_uid_policy_lists(trusted_dir):
    policy = write_policy(trusted_dir, {"t-spawn-uids": "allow_uids = [4711]"})
    assert spawn_as(policy, "t-spawn-uids", 4711) == SERVED


def test_spawn_mode_refuses_a_peer_when_policy_lists_only_uids(trusted_dir):
    policy = write_policy(trusted_dir, {"t-spawn-uids": "allow_uids = [4711]"})
    out = spawn_as(policy, "t-spawn-uids", 4712)
    assert out.startswith("HandshakeError") and "peer uid 4712" in out
    assert "not allowed to use context 't-spawn-uids'" in out


# -- the client's check of who serves a daemon socket ------------------------------------


def fake_server(directory: Path, speak: bool) -> tuple[int, int, str]:
    """Fork a server running as nobody on ``directory/x.sock``.

    Returns (pid, read end of its report, socket path). The report is the
    number of bytes the server received from its one client.
    """
    path = str(directory / "x.sock")
    ready_r, ready_w = os.pipe()
    report_r, report_w = os.pipe()
    server_protocol = ServerProtocol("t-fake")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fake server
        received = b""
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(1)
            os.write(ready_w, b"1")
            conn, _ = listener.accept()
            conn.settimeout(20)
            while chunk := conn.recv(65536):
                received += chunk
                if speak:
                    for request in server_protocol.receive_data(chunk):
                        conn.sendall(server_protocol.reply_ok(request.id, "pong from nobody"))
                    conn.sendall(server_protocol.take_output())
        finally:
            os.write(report_w, str(len(received)).encode())
            os._exit(0)
    os.close(ready_w)
    os.close(report_w)
    assert os.read(ready_r, 1) == b"1", "fake server did not start"
    os.close(ready_r)
    return pid, report_r, path


@pytest.fixture
def nobody_dir(trusted_dir):
    path = trusted_dir / "fake"
    path.mkdir()
    os.chown(path, NOBODY, NOBODY)
    return path


def test_client_refuses_a_socket_served_by_an_ordinary_user_and_sends_it_nothing(nobody_dir):
    pid, report, path = fake_server(nobody_dir, speak=True)
    ctx = Context("t-fake", socket_path=path)
    try:
        with pytest.raises(HandshakeError, match=r"served by uid 65534 \(nobody\)"):
            ctx.start()
    finally:
        ctx.stop()
        received = os.read(report, 64)
        os.close(report)
        os.waitpid(pid, 0)
    assert received == b"0"  # not even the hello


def test_client_accepts_the_configured_daemon_user(nobody_dir):
    pid, report, path = fake_server(nobody_dir, speak=True)
    ctx = Context("t-fake", mode=DaemonMode(path, server_user="nobody"))
    try:
        assert ctx._call(OP_PING, "", [], {}) == "pong from nobody"
    finally:
        ctx.stop()
        os.read(report, 64)
        os.close(report)
        os.waitpid(pid, 0)
