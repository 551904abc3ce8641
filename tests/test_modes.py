"""Start modes: the Context keywords pick one, and each mode opens its own kind of helper."""

import os

import pytest

import privsepd
from privsepd.modes import DaemonMode, ForkMode, SpawnMode


def test_context_without_reach_keywords_forks():
    assert isinstance(privsepd.Context("m").mode, ForkMode)


def test_socket_path_selects_daemon_mode():
    mode = privsepd.Context("m", socket_path="/run/privsepd/m.sock").mode
    assert isinstance(mode, DaemonMode)
    assert mode.socket_path == "/run/privsepd/m.sock"


def test_helper_command_selects_spawn_mode():
    mode = privsepd.Context("m", helper_command=["sudo", "privsepd", "helper"]).mode
    assert isinstance(mode, SpawnMode)
    assert mode.command == ["sudo", "privsepd", "helper"]


def test_socket_path_and_helper_command_together_are_refused():
    with pytest.raises(ValueError, match="exclude"):
        privsepd.Context("m", socket_path="/x.sock", helper_command=["sudo"])


def test_explicit_mode_wins():
    mode = DaemonMode("/run/privsepd/other.sock")
    assert privsepd.Context("m", mode=mode).mode is mode


def test_daemon_mode_names_the_socket_it_cannot_reach(tmp_path):
    ctx = privsepd.Context("m", mode=DaemonMode(str(tmp_path / "absent.sock")))
    with pytest.raises(privsepd.HelperDiedError, match="absent.sock"):
        ctx.start()


def test_spawn_mode_names_a_missing_program():
    ctx = privsepd.Context("m", mode=SpawnMode(["/nonexistent/privsepd-helper"]))
    with pytest.raises(privsepd.HelperDiedError, match="not found"):
        ctx.start()


# --- fork mode without privileges ------------------------------------------------


def test_fork_mode_started_unprivileged_says_it_needs_root_and_what_to_use_instead(root):
    from conftest import in_child

    def child() -> list:
        ctx = privsepd.Context("neutron", capabilities=["CAP_NET_ADMIN"])
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        try:
            ctx.start()
        except privsepd.PrivsepError as exc:
            return [type(exc).__name__, str(exc)]
        return ["started", ""]

    kind, message = in_child(child)
    assert kind == "ScopingError"
    assert "fork mode needs root" in message.lower()
    assert "uid 65534" in message
    assert "CAP_SETPCAP" in message and "CAP_NET_ADMIN" in message
    assert "socket_path=" in message and "helper_command=" in message
    assert "prctl" not in message


def test_fork_mode_needs_the_capabilities_not_uid_0(root):
    """A non-root process that kept CAP_SETPCAP/SETUID/SETGID and the declared ones may fork."""
    from conftest import in_child

    from privsepd.helper import kernel

    def child() -> list:
        ctx = privsepd.Context("neutron", capabilities=["CAP_NET_ADMIN"])
        kernel.set_securebits(kernel.SECBIT_NO_SETUID_FIXUP)  # keep caps across setuid
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        try:
            ctx.start()
            return [os.getuid(), ctx.ping()]
        finally:
            ctx.stop()

    assert in_child(child) == [65534, "pong"]


# --- spawn mode: the program sudo runs ---------------------------------------------


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    program = tmp_path / "privsepd"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [
        ["sudo", "privsepd", "helper"],
        ["sudo", "-n", "privsepd", "helper"],
        ["sudo", "-n", "-u", "root", "privsepd", "helper"],
        ["sudo", "-nuroot", "privsepd", "helper"],
        ["sudo", "--user", "root", "--non-interactive", "privsepd", "helper"],
        ["sudo", "--user=root", "--", "privsepd", "helper"],
        ["/usr/bin/sudo", "-n", "privsepd", "helper"],
    ],
)
def test_a_bare_program_after_sudo_is_resolved_in_the_callers_path(bin_dir, command):
    argv = SpawnMode(command).argv("neutron")
    assert argv[argv.index(str(bin_dir / "privsepd")) + 1 :] == ["helper", "--context", "neutron"]
    assert argv[0] == command[0]


def test_an_absolute_program_after_sudo_is_left_alone(bin_dir):
    command = ["sudo", "-n", "/usr/local/bin/privsepd", "helper"]
    assert SpawnMode(command).argv("n") == [*command, "--context", "n"]


def test_without_sudo_the_command_is_run_as_given(bin_dir):
    assert SpawnMode(["privsepd", "helper"]).argv("n") == ["privsepd", "helper", "--context", "n"]


def test_a_program_sudo_cannot_find_on_this_path_either_is_a_clear_error(bin_dir):
    ctx = privsepd.Context("m", helper_command=["sudo", "-n", "privsepd-absent", "helper"])
    with pytest.raises(privsepd.HelperDiedError, match="secure_path.*absolute path"):
        ctx.start()
