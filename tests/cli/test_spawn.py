"""Spawn mode: ``privsepd helper --context NAME`` serves the socket on its stdin."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import needs_posix_spawn, proc_status

from privsepd import HandshakeError, UnknownFunctionError
from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context

pytestmark = needs_posix_spawn


POLICY = """
[context.t-spawn]
capabilities = ["CAP_DAC_READ_SEARCH"]
user = "nobody"

[[function]]
context = "t-spawn"
name = "privsepd.cli.demo:count_lines"
args.path = { path_under = "/etc", must_exist = true }
"""


@pytest.fixture
def policy(trusted_dir):
    path = trusted_dir / "policy.toml"
    path.write_text(POLICY)
    path.chmod(0o644)
    return str(path)


def helper_command(policy: str) -> list[str]:
    return [sys.executable, "-m", "privsepd.cli.main", "helper", "--policy", policy]


def test_spawned_helper_is_scoped_by_policy_and_runs_its_function(policy):
    ctx = Context("t-spawn", helper_command=helper_command(policy))
    try:
        with open("/etc/shadow", "rb") as f:
            expected = sum(1 for _ in f)
        assert ctx._call(OP_CALL, "privsepd.cli.demo:count_lines", ["/etc/shadow"], {}) == expected
        st = proc_status(ctx.helper_pid)
        assert int(st["CapEff"], 16) == 1 << 2  # CAP_DAC_READ_SEARCH
        assert st["Uid"].split()[0] == "65534"
        assert st["NoNewPrivs"] == "1"
    finally:
        ctx.stop()


def test_spawned_helper_refuses_functions_the_policy_does_not_list(policy):
    ctx = Context("t-spawn", helper_command=helper_command(policy))
    try:
        with pytest.raises(UnknownFunctionError):
            ctx._call(OP_CALL, "os:system", ["id"], {})
    finally:
        ctx.stop()


def test_spawned_helper_refuses_a_context_the_policy_does_not_declare(policy):
    ctx = Context("t-nope", helper_command=helper_command(policy))
    with pytest.raises(HandshakeError, match="policy declares no context 't-nope'"):
        ctx.start()


def test_helper_command_refuses_a_stdin_that_is_not_a_socket(root):
    exe = shutil.which("privsepd")
    assert exe
    proc = subprocess.run(
        [exe, "helper", "--context", "x"], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "standard input is not a Unix stream socket" in proc.stderr
