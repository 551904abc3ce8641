"""The forked, scoped helper on the real kernel (root required).

Every claim is checked on a real helper process: its /proc/PID/status, and
attempts to do what its capabilities do not grant.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
from conftest import proc_status, require_feature

from privsepd import (
    ConstraintError,
    DeniedError,
    HandshakeError,
    HelperDiedError,
    ProtocolError,
    UnknownFunctionError,
)
from privsepd.channel.protocol import OP_CALL, ClientProtocol, encode_frame
from privsepd.constraints import InterfaceName, IntRange
from privsepd.context import Context
from privsepd.helper.scoping import Landlock

CAP_NET_ADMIN = 1 << 12
CAP_DAC_OVERRIDE = 1 << 1

net = Context("t-net", ["CAP_NET_ADMIN"], timeout=10)
dac = Context("t-dac", ["CAP_DAC_OVERRIDE"], timeout=10)
root_ctx = Context("t-root", ["CAP_NET_ADMIN"], stay_root=True, timeout=10)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _run(argv: list[str]) -> list:
    proc = subprocess.run(argv, capture_output=True)
    return [proc.returncode, proc.stdout, proc.stderr]


for _ctx in (net, dac, root_ctx):
    _ctx.entrypoint(_read)
    _ctx.entrypoint(_append)
    _ctx.entrypoint(_run)


@net.entrypoint
def chown(path: str, uid: int) -> None:
    os.chown(path, uid, uid)


@net.entrypoint
def identity() -> dict:
    umask = os.umask(0o077)
    os.umask(umask)
    return {"uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(), "umask": umask}


@net.entrypoint(dev=InterfaceName(), mtu=IntRange(68, 9000))
def link_args(dev: str, mtu: int) -> list:
    return [dev, mtu]


@net.entrypoint
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@net.entrypoint
def echo(*values):
    return list(values)


@net.entrypoint
def warn(message: str) -> None:
    logging.getLogger("privsepd.tests.helper").warning("from helper: %s", message)


@pytest.fixture(autouse=True)
def _needs_root(root):
    yield
    for ctx in (net, dac, root_ctx):
        ctx.stop()


def caps(status: dict[str, str], key: str) -> int:
    return int(status[key], 16)


@pytest.fixture
def public_dir(trusted_dir):
    """Files the unprivileged helper can reach (tmp_path sits under a 0700 dir)."""
    return trusted_dir


@pytest.fixture
def secret(public_dir):
    path = public_dir / "secret"
    path.write_bytes(b"s3cret\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
def passwd_copy(public_dir):
    path = public_dir / "passwd"
    shutil.copy("/etc/passwd", path)
    os.chmod(path, 0o644)
    return str(path)


def test_fixture_files_are_reachable_by_the_helper_user(public_dir):
    probe = public_dir / "probe"
    probe.write_bytes(b"visible")
    os.chmod(probe, 0o644)
    assert _read_in(net, str(probe)) == b"visible"


# -- what the helper holds ----------------------------------------------------------


def test_helper_status_shows_exactly_the_declared_capabilities():
    net.start()
    st = proc_status(net.helper_pid)
    assert {k: caps(st, k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {
        "CapInh": 0,
        "CapPrm": CAP_NET_ADMIN,
        "CapEff": CAP_NET_ADMIN,
        "CapBnd": CAP_NET_ADMIN,
        "CapAmb": 0,
    }


def test_helper_has_no_new_privs_set():
    net.start()
    assert proc_status(net.helper_pid)["NoNewPrivs"] == "1"


def test_helper_leaves_uid_0_for_an_unprivileged_user_by_default():
    ident = identity()
    assert 0 not in ident["uid"] and 0 not in ident["gid"]
    assert 0 not in ident["groups"]


def test_helper_umask_is_0077():
    assert identity()["umask"] == 0o077


def test_stay_root_is_an_explicit_opt_in_that_keeps_uid_0_with_scoped_caps():
    root_ctx.start()
    st = proc_status(root_ctx.helper_pid)
    assert st["Uid"].split() == ["0", "0", "0", "0"]
    assert caps(st, "CapEff") == CAP_NET_ADMIN and caps(st, "CapBnd") == CAP_NET_ADMIN


# -- what it cannot do ----------------------------------------------------------------


def test_helper_without_dac_caps_cannot_read_a_0600_root_file(secret):
    with pytest.raises(PermissionError):
        _read_in(net, secret)


def _read_in(ctx: Context, path: str) -> bytes:
    return ctx._call(OP_CALL, f"{__name__}:_read", [path], {})


def _append_in(ctx: Context, path: str, data: bytes) -> None:
    return ctx._call(OP_CALL, f"{__name__}:_append", [path, data], {})


def _run_in(ctx: Context, argv: list[str]) -> list:
    return ctx._call(OP_CALL, f"{__name__}:_run", [argv], {})


def test_helper_without_dac_caps_cannot_write_a_root_owned_0644_file(passwd_copy):
    with pytest.raises(PermissionError):
        _append_in(net, passwd_copy, b"evil::0:0::/:/bin/sh\n")
    assert b"evil" not in _read(passwd_copy)


def test_stay_root_helper_can_rewrite_root_owned_files_which_is_why_it_is_opt_in(passwd_copy):
    _append_in(root_ctx, passwd_copy, b"evil::0:0::/:/bin/sh\n")
    assert b"evil" in _read(passwd_copy)


def test_helper_cannot_chown(secret):
    with pytest.raises(PermissionError):
        chown(secret, 65534)
    assert os.stat(secret).st_uid == 0


def test_helper_with_dac_override_can_read_and_write_root_files(secret, passwd_copy):
    assert _read_in(dac, secret) == b"s3cret\n"
    _append_in(dac, passwd_copy, b"# ok\n")
    assert _read(passwd_copy).endswith(b"# ok\n")


def test_command_run_by_the_helper_gets_no_capability(tmp_path):
    rc, out, _ = _run_in(net, ["/bin/cat", "/proc/self/status"])
    st = dict(line.split(":\t", 1) for line in out.decode().splitlines() if ":\t" in line)
    assert rc == 0
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
    assert int(st["CapBnd"], 16) == CAP_NET_ADMIN
    assert int(st["CapAmb"], 16) == 0


@pytest.fixture
def suid_dir():
    """A 0755 directory on a filesystem that honours setuid bits.

    /run is often a nosuid tmpfs: a setuid binary there proves nothing.
    """
    for base in ("/var/lib", "/var/tmp", "/run"):
        if os.path.isdir(base) and not os.statvfs(base).f_flag & getattr(os, "ST_NOSUID", 2):
            path = tempfile.mkdtemp(prefix="privsepd-suid-", dir=base)
            os.chmod(path, 0o755)
            yield pathlib.Path(path)
            shutil.rmtree(path)
            return
    require_feature(False, "a filesystem that honours setuid bits")


def test_setuid_root_binary_run_by_the_helper_does_not_regain_caps(suid_dir):
    assert not os.statvfs(suid_dir).f_flag & getattr(os, "ST_NOSUID", 2)
    suid_cat = suid_dir / "cat"
    shutil.copy("/bin/cat", suid_cat)
    os.chown(suid_cat, 0, 0)
    os.chmod(suid_cat, 0o4755)
    assert os.stat(suid_cat).st_mode & stat.S_ISUID
    rc, out, _ = _run_in(net, [str(suid_cat), "/proc/self/status"])
    st = dict(line.split(":\t", 1) for line in out.decode().splitlines() if ":\t" in line)
    assert rc == 0
    assert st["Uid"].split()[1] != "0"
    assert int(st["CapEff"], 16) == 0


# -- calls, denials and errors -------------------------------------------------------


def test_allowed_call_returns_its_result():
    assert link_args("eth0", 1500) == ["eth0", 1500]


def test_denied_argument_names_the_argument_and_the_rule():
    with pytest.raises(ConstraintError, match=r"argument 'mtu' fails int_range"):
        link_args("eth0", 65536)
    assert link_args("eth0", 9000) == ["eth0", 9000]


def test_arguments_that_do_not_fit_the_signature_are_denied():
    with pytest.raises(DeniedError, match="do not fit the signature"):
        net._call(OP_CALL, f"{__name__}:link_args", ["eth0"], {"mtu": 1, "x": 2})


def test_unknown_function_is_a_clear_error_and_imports_nothing():
    with pytest.raises(UnknownFunctionError, match=r"no entrypoint named 'os:system'"):
        net._call(OP_CALL, "os:system", ["id"], {})
    assert echo(1, 2) == [1, 2]


def test_bytes_and_str_cross_unchanged():
    assert echo(b"\x00\xff", "é") == [b"\x00\xff", "é"]


def test_entrypoint_cannot_be_registered_after_the_helper_started():
    net.start()
    with pytest.raises(Exception, match="already started"):

        @net.entrypoint
        def late() -> None:
            pass


def test_helper_log_records_reach_the_client_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="privsepd.t-net"):
        warn("hello")
    assert any("from helper: hello" in r.getMessage() for r in caplog.records)


def test_garbage_on_the_socket_fails_with_a_protocol_error_then_the_next_call_works():
    net.start()
    old = net.helper_pid
    net._channel._sock.sendall(b"\x00\x00\x00\x03\xc1\xc1\xc1")
    with pytest.raises(ProtocolError, match="malformed frame"):
        echo(1)
    assert echo(2) == [2]
    assert net.helper_pid != old


def test_truncated_frame_then_eof_does_not_hang_the_helper():
    net.start()
    helper = net._helper
    net._channel._sock.sendall(b"\x00\x00\x01\x00\x93")
    net._channel._sock.shutdown(socket.SHUT_WR)
    assert helper.poll(5) is not None


def test_oversize_frame_is_refused_by_the_helper():
    net.start()
    net._channel._sock.sendall((100 * 1024 * 1024).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="exceeds limit"):
        echo(1)
    assert echo(3) == [3]


def test_wrong_protocol_version_is_refused_by_the_forked_helper():
    from privsepd.audit import AuditLog
    from privsepd.helper.monitor import HelperProcess, HelperSpec, Monitor

    spec = HelperSpec("t-raw", net.scope())
    helper = HelperProcess.fork(spec, lambda: Monitor("t-raw", {}), AuditLog())
    try:
        helper.sock.settimeout(5)
        helper.sock.sendall(encode_frame(["privsepd", 99, "t-raw"]))
        got = b""
        while chunk := helper.sock.recv(4096):
            got += chunk
        with pytest.raises(HandshakeError, match="protocol version mismatch: client speaks 99"):
            ClientProtocol("t-raw").receive_data(got)
    finally:
        helper.stop()


def test_helper_killed_mid_call_fails_the_call_at_once_then_a_new_helper_serves():
    net.start()
    old = net.helper_pid
    errors: list[BaseException] = []

    def call():
        try:
            sleep(30)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    os.kill(old, signal.SIGKILL)
    t.join(10)
    assert time.monotonic() - start < 2
    assert len(errors) == 1 and isinstance(errors[0], HelperDiedError)
    assert "killed by SIGKILL" in str(errors[0]) and "in flight lost" in str(errors[0])
    assert echo("again") == ["again"]
    assert net.helper_pid != old


def test_eight_threads_each_get_their_own_replies():
    wrong: list = []

    def worker(n: int) -> None:
        for i in range(300):
            got = echo(n, i)
            if got != [n, i]:
                wrong.append((n, i, got))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_helper_exits_when_the_client_closes_the_channel():
    net.start()
    helper = net._helper
    net._channel._sock.shutdown(socket.SHUT_RDWR)
    assert helper.poll(5) is not None


def test_helper_dies_with_its_client_process(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from privsepd.context import Context
        ctx = Context("t-orphan", ["CAP_NET_ADMIN"])
        ctx.start()
        print(ctx.helper_pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    helper_pid = int(proc.stdout.readline())
    assert os.path.exists(f"/proc/{helper_pid}")
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{helper_pid}/status") as f:
                if "State:\tZ" in f.read():
                    break
        except (FileNotFoundError, ProcessLookupError):  # gone before or during the read
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"helper {helper_pid} outlived its client")


def test_helper_that_cannot_scope_refuses_to_serve_with_the_reason():
    bad = Context("t-bad", ["CAP_NET_ADMIN"], landlock=Landlock(read=("/nonexistent-privsepd",)))
    with pytest.raises(HandshakeError, match="refused to serve: .*'/nonexistent-privsepd'"):
        bad.start()
    bad.stop()


@net.entrypoint
def exits() -> None:
    raise SystemExit(3)


def test_entrypoint_that_exits_is_an_error_reply_and_the_helper_keeps_serving():
    for _ in range(10):
        with pytest.raises(RuntimeError, match="entrypoint raised SystemExit: 3"):
            exits()
    slow = threading.Thread(target=lambda: sleep(2.0))
    slow.start()
    time.sleep(0.05)
    start = time.monotonic()
    assert echo("still here") == ["still here"]
    assert time.monotonic() - start < 1.0  # the slow call takes 2 s
    slow.join()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before or during the read
        return "gone"


def test_helper_whose_forking_parent_dies_before_it_scopes_does_not_serve():
    """Another process still holds the channel, so EOF cannot end the helper."""
    from privsepd.audit import AuditLog
    from privsepd.helper.monitor import HelperProcess, HelperSpec, Monitor

    def slow_monitor() -> Monitor:
        time.sleep(0.5)  # the parent dies meanwhile
        return Monitor("t-orphan", {})

    spec = HelperSpec("t-orphan", net.scope())
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # pragma: no cover - the service that forks and dies
        try:
            helper = HelperProcess.fork(spec, slow_monitor, AuditLog())
            keeper = os.fork()
            if keeper == 0:
                time.sleep(20)  # holds helper.sock open
                os._exit(0)
            os.write(w, f"{helper.pid} {keeper}".encode())
        finally:
            os._exit(0)
    os.close(w)
    helper_pid, keeper = (int(x) for x in os.read(r, 64).split())
    os.close(r)
    os.waitpid(mid, 0)
    try:
        deadline = time.monotonic() + 10
        while _state(helper_pid) not in ("Z", "gone") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(helper_pid) in ("Z", "gone"), "helper serves with its parent gone"
    finally:
        os.kill(keeper, signal.SIGKILL)
        try:
            os.kill(helper_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@net.entrypoint(values=IntRange(0, 10), options=IntRange(0, 10))
def bounded(*values, **options):
    return [list(values), options]


@pytest.mark.parametrize(
    ("args", "kwargs", "argument"),
    [
        ([11, 1, 2], {}, "values[0]"),
        ([1, 2, 11], {}, "values[2]"),
        ([], {"a": 11, "b": 1}, "options['a']"),
        ([], {"a": 1, "b": 2, "c": 11}, "options['c']"),
    ],
)
def test_every_item_of_star_args_and_star_star_kwargs_is_checked(args, kwargs, argument):
    with pytest.raises(ConstraintError) as info:
        bounded(*args, **kwargs)
    assert str(info.value).startswith(f"argument {argument!r} fails int_range [0, 10]")
    assert bounded(0, 10, a=0, b=10) == [[0, 10], {"a": 0, "b": 10}]
