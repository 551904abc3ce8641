"""``Method.ROOTWRAP``: a spawned ``privsepd helper`` or a daemon socket, per context.

spawnsvc declares two contexts in oslo's default section ``privsep``; each
is its own privsepd context, named by its pypath, with its own helper and,
in daemon mode, its own socket.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import spawnsvc
from conftest import in_child, proc_status, trusted_tree, wait_listening
from oslo_config import cfg
from svcdeps.netlink import NetlinkError

from privsepd.compat.oslo_privsep import daemon as oslo_daemon
from privsepd.compat.oslo_privsep import priv_context
from privsepd.helper.procinfo import HAVE_PYTHON_PRCTL
from privsepd.modes import DaemonMode, ForkMode, SpawnMode

HERE = Path(__file__).resolve().parent
CAP_DAC_READ_SEARCH, CAP_NET_ADMIN = 1 << 2, 1 << 12
# Stands in for an installed service: the root interpreter finds spawnsvc
# on sys.path (a test directory here, site-packages in production).
BOOT = (
    "import sys; sys.path[:0] = [sys.argv.pop(1)]; "
    "from privsepd.cli.main import main; sys.exit(main())"
)

POLICY = """
[context."spawnsvc.ctx"]
capabilities = ["CAP_NET_ADMIN"]
user = "nobody"

[context."spawnsvc.other"]
capabilities = ["CAP_DAC_READ_SEARCH"]
user = "nobody"

[[function]]
context = "spawnsvc.ctx"
name = "spawnsvc:whoami"

[[function]]
context = "spawnsvc.ctx"
name = "spawnsvc:no_such_device"

[[function]]
context = "spawnsvc.other"
name = "spawnsvc:other_whoami"
"""


def privsepd_command(*args: str) -> list[str]:
    return [sys.executable, "-c", BOOT, str(trusted_tree(HERE)), *args]


@pytest.fixture
def policy(trusted_dir):
    path = trusted_dir / "policy.toml"
    path.write_text(POLICY)
    path.chmod(0o644)
    return str(path)


@pytest.fixture(autouse=True)
def _reset():
    yield
    for context in (spawnsvc.ctx, spawnsvc.other):
        context.stop()
    for name in ("helper_command", "privsepd_socket_dir"):
        cfg.CONF.clear_override(name, group="privsep")


@pytest.fixture
def daemon(trusted_dir, policy):
    sockets = trusted_dir / "sock"
    cmd = privsepd_command("serve", "--policy", policy, "--socket-dir", str(sockets))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    # Both contexts' sockets: the second is bound after the first listens.
    wait_listening(sockets / "spawnsvc.ctx.sock", proc)
    wait_listening(sockets / "spawnsvc.other.sock", proc)
    yield sockets
    proc.kill()
    proc.wait()


def test_contexts_are_named_by_their_pypath():
    assert (spawnsvc.ctx.name, spawnsvc.other.name) == ("spawnsvc.ctx", "spawnsvc.other")
    assert spawnsvc.ctx.cfg_section == spawnsvc.other.cfg_section == "privsep"


def test_configured_helper_command_spawns_privsepd_helper_for_each_context(policy):
    cfg.CONF.set_override(
        "helper_command",
        shlex.join(privsepd_command("helper", "--policy", policy)),
        group="privsep",
    )
    assert spawnsvc.whoami()["CapEff"] == CAP_NET_ADMIN
    assert spawnsvc.other_whoami()["CapEff"] == CAP_DAC_READ_SEARCH
    for context in (spawnsvc.ctx, spawnsvc.other):
        assert isinstance(context.context.mode, SpawnMode)
        with open(f"/proc/{context.context.helper_pid}/cmdline", "rb") as f:
            cmdline = f.read()
        if HAVE_PYTHON_PRCTL:  # the helper's title replaces its command line
            assert cmdline.startswith(f"privsepd-helper: {context.name} [".encode())
        else:
            assert cmdline.split(b"\0")[-3:-1] == [b"--context", context.name.encode()]
        assert proc_status(context.context.helper_pid)["Uid"].split()[0] == "65534"
    assert spawnsvc.ctx.context.helper_pid != spawnsvc.other.context.helper_pid


def test_spawned_helper_errors_and_logs_arrive_as_oslo_delivers_them(policy, caplog):
    cfg.CONF.set_override(
        "helper_command",
        shlex.join(privsepd_command("helper", "--policy", policy)),
        group="privsep",
    )
    caplog.set_level(logging.INFO)
    pid = spawnsvc.whoami()["pid"]
    with pytest.raises(NetlinkError) as caught:
        spawnsvc.no_such_device()
    assert caught.value.code == 19
    assert [r.name for r in caplog.records if r.getMessage() == f"whoami in {pid}"] == ["spawnsvc"]


def test_daemon_mode_connects_each_context_to_its_own_socket(daemon):
    cfg.CONF.set_override("privsepd_socket_dir", str(daemon), group="privsep")
    assert spawnsvc.whoami()["CapEff"] == CAP_NET_ADMIN
    assert spawnsvc.other_whoami()["CapEff"] == CAP_DAC_READ_SEARCH
    paths = [c.context.mode.socket_path for c in (spawnsvc.ctx, spawnsvc.other)]
    assert paths == [str(daemon / "spawnsvc.ctx.sock"), str(daemon / "spawnsvc.other.sock")]
    assert all(isinstance(c.context.mode, DaemonMode) for c in (spawnsvc.ctx, spawnsvc.other))


def test_a_missing_daemon_socket_fails_to_start_with_the_path(trusted_dir):
    cfg.CONF.set_override("privsepd_socket_dir", str(trusted_dir), group="privsep")
    with pytest.raises(oslo_daemon.FailedToDropPrivileges, match="spawnsvc.ctx.sock"):
        spawnsvc.whoami()


def test_root_with_nothing_configured_forks():
    spawnsvc.ctx.start()
    assert isinstance(spawnsvc.ctx.context.mode, ForkMode)
    assert spawnsvc.whoami()["CapEff"] == CAP_NET_ADMIN


def _as_nobody(fn):
    def run():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        return fn()

    return in_child(run)


def test_unprivileged_service_spawns_through_the_root_helper(root):
    def configure():
        priv_context.init(root_helper=["sudo", "-n"])
        spawnsvc.ctx._configure(priv_context.Method.ROOTWRAP)
        return [spawnsvc.ctx.context.mode.command, spawnsvc.ctx.helper_command()]

    mode_command, full = _as_nobody(configure)
    assert mode_command == ["sudo", "-n", "privsepd", "helper"]
    assert full == ["sudo", "-n", "privsepd", "helper", "--context", "spawnsvc.ctx"]


def test_unprivileged_start_failure_is_failed_to_drop_privileges(root):
    def start():
        priv_context.init(root_helper=["/nonexistent/sudo"])
        try:
            spawnsvc.ctx.start()
        except oslo_daemon.FailedToDropPrivileges as exc:
            return str(exc)
        return "started"

    message = _as_nobody(start)
    assert "'spawnsvc.ctx' failed to start" in message and "/nonexistent/sudo" in message


def test_rootwrap_without_pypath_is_refused_as_in_oslo(root):
    anonymous = priv_context.PrivContext("test_rootwrap_method", capabilities=[])

    def start():
        try:
            anonymous.start()
        except AssertionError as exc:
            return str(exc)
        return "started"

    assert _as_nobody(start) == "helper_command requires priv_context pypath to be specified"


def test_pypath_must_name_the_context_itself():
    impostor = priv_context.PrivContext("spawnsvc", pypath="spawnsvc.other", capabilities=[])
    with pytest.raises(AssertionError, match="pypath for context object"):
        impostor.helper_command()
