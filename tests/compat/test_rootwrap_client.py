"""rootwrap_client.Client: oslo_rootwrap.client.Client's API on a privsepd helper.

oslo's own daemon client is the oracle for allowed commands (same results);
for a denied command oslo's daemon fails with RemoteError, privsepd
returns 99 with oslo-rootwrap's message.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from multiprocessing.managers import RemoteError as OsloRemoteError

import pytest
from conftest import wait_listening
from test_rootwrap_method import privsepd_command

from privsepd.compat.rootwrap_client import Client

POLICY = """
[context.t-rwclient]
capabilities = []
user = "nobody"

[[command]]
context = "t-rwclient"
name = "echo"
exec = "/bin/echo"
args = [{ rest = true }]
run_as = "nobody"

[[command]]
context = "t-rwclient"
name = "cat"
exec = "/bin/cat"
run_as = "nobody"
"""

FILTERS = "[Filters]\necho: CommandFilter, /bin/echo, root\ncat: CommandFilter, /bin/cat, root\n"


@pytest.fixture
def policy(trusted_dir):
    path = trusted_dir / "policy.toml"
    path.write_text(POLICY)
    path.chmod(0o644)
    return str(path)


@pytest.fixture
def client(policy):
    c = Client(privsepd_command("helper", "--policy", policy, "--context", "t-rwclient"))
    yield c
    c.stop()


@pytest.fixture
def oslo_client(tmp_path, root):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "t.filters").write_text(FILTERS)
    conf = tmp_path / "rootwrap.conf"
    conf.write_text(f"[DEFAULT]\nfilters_path={tmp_path / 'f'}\nexec_dirs=/bin\n")
    daemon = os.path.join(os.path.dirname(sys.executable), "oslo-rootwrap-daemon")
    if not os.path.exists(daemon):
        daemon = shutil.which("oslo-rootwrap-daemon")
    assert daemon, "oslo.rootwrap (test extra) provides oslo-rootwrap-daemon"
    from oslo_rootwrap import client as oslo

    return oslo.Client([daemon, str(conf)])


@pytest.mark.parametrize(
    ("cmd", "stdin"),
    [(["echo", "hi", "there"], None), (["cat"], "input text\n"), (["/bin/echo", "é"], None)],
)
def test_allowed_command_returns_what_oslo_returns(client, oslo_client, cmd, stdin):
    assert client.execute(cmd, stdin) == tuple(oslo_client.execute(cmd, stdin))


def test_denied_command_returns_99_with_oslo_rootwraps_message(client):
    assert client.execute(["id"]) == (99, "", "Unauthorized command: id (no filter matched)\n")


def test_oslo_daemon_fails_a_denied_command_with_remote_error(oslo_client):
    with pytest.raises(OsloRemoteError):
        oslo_client.execute(["id"])


def test_a_dead_helper_is_restarted_and_the_command_sent_again(client):
    assert client.execute(["echo", "1"])[1] == "1\n"
    first = client._context.helper_pid
    os.kill(first, signal.SIGKILL)
    time.sleep(0.1)
    assert client.execute(["echo", "2"]) == (0, "2\n", "")
    assert client._context.helper_pid not in (None, first)


def test_daemon_socket_form_connects_to_privsepd_serve(trusted_dir, policy):
    sockets = trusted_dir / "sock"
    proc = subprocess.Popen(
        privsepd_command("serve", "--policy", policy, "--socket-dir", str(sockets)),
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(sockets / "t-rwclient.sock", proc)
        c = Client([f"unix:{sockets / 't-rwclient.sock'}"])
        assert c.execute(["cat"], "via daemon") == (0, "via daemon", "")
        c.stop()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "cmd",
    [
        ["sudo", "neutron-rootwrap-daemon", "/etc/neutron/rootwrap.conf"],
        ["--context", "x"],
        ["privsepd", "helper", "--context"],
        ["privsepd", "helper", "--context", "a", "--context", "b"],
        ["unix:/run/privsepd/"],
    ],
)
def test_a_command_that_names_no_single_context_is_refused(cmd):
    with pytest.raises(ValueError):
        Client(cmd)
