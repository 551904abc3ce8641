"""Daemon mode: ``privsepd serve`` authorizes peers by SO_PEERCRED."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import in_child, wait_listening

from privsepd import HandshakeError, UnknownFunctionError
from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context

POLICY = """
[context.t-daemon]
capabilities = ["CAP_DAC_READ_SEARCH"]
user = "nobody"
allow_uids = [65534]

[[function]]
context = "t-daemon"
name = "privsepd.cli.demo:count_lines"
args.path = { path_under = "/etc", must_exist = true }
"""


@pytest.fixture
def daemon_args() -> list[str]:
    return []


@pytest.fixture
def daemon(trusted_dir, daemon_args):
    directory = str(trusted_dir)
    policy = os.path.join(directory, "policy.toml")
    with open(policy, "w") as f:
        f.write(textwrap.dedent(POLICY))
    os.chmod(policy, 0o644)
    os.chmod(directory, 0o755)
    sockets = os.path.join(directory, "sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privsepd.cli.main",
            "serve",
            "--policy",
            policy,
            "--socket-dir",
            sockets,
            *daemon_args,
        ],
        stderr=subprocess.PIPE,
    )
    path = os.path.join(sockets, "t-daemon.sock")
    wait_listening(path, proc)
    os.chmod(sockets, 0o755)
    yield path
    proc.kill()
    proc.wait()


def call_as(uid: int, path: str) -> str:
    """Connect from a child running as ``uid``; return the outcome as text."""
    # Everything is imported before the fork: the Python install under
    # /root is not readable once the child has dropped to ``uid``.
    ctx = Context("t-daemon", socket_path=path)

    def connect() -> str:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            lines = ctx._call(OP_CALL, "privsepd.cli.demo:count_lines", ["/etc/shadow"], {})
            return f"ok {lines}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    return in_child(connect)


def test_allowed_peer_gets_a_scoped_helper_that_runs_the_policy_function(daemon):
    with open("/etc/shadow", "rb") as f:
        expected = sum(1 for _ in f)
    assert call_as(65534, daemon) == f"ok {expected}"


def test_peer_not_in_the_allow_list_is_refused_with_its_uid(daemon):
    out = call_as(1000, daemon)
    assert out.startswith("HandshakeError")
    assert "peer uid 1000 gid 1000" in out and "not allowed to use context 't-daemon'" in out


def test_daemon_helper_refuses_functions_policy_does_not_list(daemon):
    ctx = Context("t-daemon", socket_path=daemon)
    try:
        with pytest.raises(UnknownFunctionError):
            ctx._call(OP_CALL, "os:system", ["id"], {})
    finally:
        ctx.stop()


def test_wrong_context_name_is_refused_by_the_daemon(daemon):
    ctx = Context("other", socket_path=daemon)
    with pytest.raises(HandshakeError, match="context mismatch"):
        ctx.start()


@pytest.mark.parametrize("daemon_args", [["--max-helpers-per-uid", "1"]])
def test_peer_gets_no_more_helpers_than_its_cap(daemon):
    first = Context("t-daemon", socket_path=daemon)
    first.start()
    try:
        second = Context("t-daemon", socket_path=daemon)
        with pytest.raises(HandshakeError, match=r"peer uid 0 already has 1 helper\(s\)"):
            second.start()
    finally:
        first.stop()
