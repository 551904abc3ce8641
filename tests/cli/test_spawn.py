"""Spawn mode: ``privsepd helper --context NAME`` serves the socket on its stdin."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest
from conftest import proc_status, require_feature

from privsepd import HandshakeError, HelperDiedError, UnknownFunctionError
from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context

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


# --- sudo, its secure_path, and what a failed start says ------------------------

SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The fake's secure_path leaves out /usr/local, where a system-wide pip
# install would put privsepd (and so hide the failure the fake stands for).
FAKE_SECURE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
FAKE_SUDO = f"""#!/bin/sh
# Stands in for sudo where it is not installed: skips -n, then runs the
# program with a reset environment and PATH={FAKE_SECURE_PATH}, as sudo's
# env_reset and secure_path do (and says so on stderr when it fails).
while [ $# -gt 0 ]; do
    case "$1" in
        -n) shift ;;
        --) shift; break ;;
        -*) echo "sudo: unknown option $1" >&2; exit 1 ;;
        *) break ;;
    esac
done
exec /usr/bin/env -i PATH={FAKE_SECURE_PATH} "$@"
"""


@pytest.fixture
def fake_sudo(tmp_path, monkeypatch):
    sudo = tmp_path / "sudo"
    sudo.write_text(FAKE_SUDO)
    sudo.chmod(0o755)
    # The service's PATH has the console script (a virtualenv's bin), which
    # sudo's secure_path does not.
    venv_bin = os.path.dirname(shutil.which("privsepd") or sys.executable)
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    return str(sudo)


def test_the_fake_sudo_does_not_find_privsepd_by_name(fake_sudo):
    """Control: with the name passed through, the program is not found (the old failure)."""
    assert shutil.which("privsepd", path=FAKE_SECURE_PATH) is None, "control moot"
    proc = subprocess.run([fake_sudo, "-n", "privsepd", "helper"], capture_output=True, text=True)
    assert proc.returncode == 127
    assert "privsepd" in proc.stderr and "No such file" in proc.stderr


def test_documented_sudo_form_with_a_bare_privsepd_works(policy, fake_sudo):
    ctx = Context(
        "t-spawn", helper_command=[fake_sudo, "-n", "privsepd", "helper", "--policy", policy]
    )
    try:
        with open("/etc/shadow", "rb") as f:
            expected = sum(1 for _ in f)
        assert ctx._call(OP_CALL, "privsepd.cli.demo:count_lines", ["/etc/shadow"], {}) == expected
        assert proc_status(ctx.helper_pid)["Uid"].split()[0] == "65534"
    finally:
        ctx.stop()


def test_a_spawned_helper_that_cannot_start_puts_its_stderr_in_the_error(fake_sudo):
    ctx = Context("t-spawn", helper_command=[fake_sudo, "-n", "/nonexistent/privsepd", "helper"])
    with pytest.raises(HelperDiedError) as info:
        ctx.start()
    message = str(info.value)
    assert "exited with status 127" in message
    assert "/nonexistent/privsepd" in message and "No such file or directory" in message


def test_a_helper_refusing_its_policy_says_why_in_the_error(fake_sudo, trusted_dir):
    missing = str(trusted_dir / "absent.toml")
    ctx = Context(
        "t-spawn", helper_command=[fake_sudo, "-n", "privsepd", "helper", "--policy", missing]
    )
    with pytest.raises(HandshakeError) as info:
        ctx.start()
    assert "exited with status 2" in str(info.value)
    assert f"privsepd helper: {missing}: no such file or directory" in str(info.value)


def test_helper_output_reaches_the_context_logger(fake_sudo, caplog):
    ctx = Context(
        "t-spawn-log", helper_command=[fake_sudo, "-n", "/bin/sh", "-c", "echo hello >&2"]
    )
    with caplog.at_level("WARNING", logger="privsepd.t-spawn-log"), pytest.raises(HelperDiedError):
        ctx.start()
    assert any("hello" in r.getMessage() for r in caplog.records)


def test_a_chatty_helper_never_blocks_on_its_output_pipe(fake_sudo):
    """1 MiB of output (16x a pipe buffer) is drained; the start error comes back."""
    script = "head -c 1048576 /dev/zero | tr '\\\\0' x >&2; echo END >&2"
    ctx = Context("t-spawn", helper_command=[fake_sudo, "-n", "/bin/sh", "-c", script])
    logging.getLogger("privsepd.t-spawn").setLevel(logging.ERROR)
    try:
        with pytest.raises(HelperDiedError, match="END"):
            ctx.start()
    finally:
        logging.getLogger("privsepd.t-spawn").setLevel(logging.NOTSET)


def _real_sudo() -> str:
    sudo = shutil.which("sudo", path=SECURE_PATH)
    require_feature(sudo is not None, "sudo is not installed (.ci/run installs it)")
    return sudo


def test_real_sudo_runs_the_resolved_privsepd(policy, monkeypatch):
    sudo = _real_sudo()
    venv_bin = os.path.dirname(shutil.which("privsepd") or sys.executable)
    monkeypatch.setenv("PATH", f"{venv_bin}:{SECURE_PATH}")
    ctx = Context("t-spawn", helper_command=[sudo, "-n", "privsepd", "helper", "--policy", policy])
    try:
        assert ctx.ping() == "pong"
        # sudo stays the parent of what it runs: the helper is its child.
        with open(f"/proc/{ctx.helper_pid}/task/{ctx.helper_pid}/children") as f:
            (helper,) = f.read().split()
        assert proc_status(int(helper))["Uid"].split()[0] == "65534"
    finally:
        ctx.stop()


def test_real_sudo_refusal_is_in_the_error(root):
    """An unprivileged user without a sudoers line: sudo -n's own words reach the caller."""
    from conftest import in_child

    sudo = _real_sudo()
    program = shutil.which("privsepd")

    def child() -> str:
        ctx = Context("t-spawn", helper_command=[sudo, "-n", program, "helper"])
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        try:
            ctx.start()
        except HelperDiedError as exc:
            return str(exc)
        return "started"

    message = in_child(child)
    assert "sudo: a password is required" in message


FILES_POLICY = """
[context.t-spawn-files]
user = "nobody"
files = { read = ["/etc/shadow"] }

[[function]]
context = "t-spawn-files"
name = "privsepd.cli.demo:count_lines"
args.path = { path_under = "/etc", must_exist = true }
"""


def test_policy_files_reach_a_spawned_helper_and_confine_it(trusted_dir):
    path = trusted_dir / "files.toml"
    path.write_text(FILES_POLICY)
    path.chmod(0o644)
    ctx = Context("t-spawn-files", helper_command=helper_command(str(path)))
    try:
        with open("/etc/shadow", "rb") as f:
            expected = sum(1 for _ in f)
        name = "privsepd.cli.demo:count_lines"
        assert ctx._call(OP_CALL, name, ["/etc/shadow"], {}) == expected
        with pytest.raises(PermissionError):
            ctx._call(OP_CALL, name, ["/etc/passwd"], {})  # world-readable, not declared
        st = proc_status(ctx.helper_pid)
        assert int(st["CapEff"], 16) == 1 << 2  # CAP_DAC_READ_SEARCH, from files alone
        assert st["Seccomp"] == "2"
    finally:
        ctx.stop()
