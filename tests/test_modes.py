"""Start modes: the Context keywords pick one, and each mode opens its own kind of helper."""

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
