"""Red team, the audit trail: a compromised client must not be able to keep it empty.

The service holds the client end, so whatever only the client sees, it can
drop. The privileged side writes the record itself, to a sink opened before
it scopes, and before it acts. These tests take away what a client can take
away -- the audit key in policy, the file-size limit it starts a helper
under -- and look for the record where the client cannot reach it: the
system's /dev/log (a private socket of the test, bound over /dev/log in a
mount namespace of its own, as in test_rootwrap) or the helper's own file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from privsepd import DeniedError
from privsepd.context import Context

from .attack import SyslogTrail, argv_has, private_dev_log, refused, wait_for
from .conftest import TESTS_DIR, daemon_listening, spawn_command, write_root_file

FORK_SERVICE = textwrap.dedent(
    """
    from privsepd.context import Context
    ctx = Context("t-noaudit", timeout=10)

    @ctx.entrypoint
    def echo(value):
        return value

    ctx.start()
    try:
        ctx._call("call", "os:system", ["noaudit-token"], {})
    except Exception as exc:
        print(type(exc).__name__)
    print(echo("good"))
    ctx.stop()
    """
)


@pytest.fixture
def syslog(trusted_dir):
    trail = SyslogTrail(str(trusted_dir / "log"))
    yield trail
    trail.close()


def test_fork_helper_without_an_audit_key_records_where_the_client_cannot_reach(
    trusted_dir, syslog
):
    argv = private_dev_log(str(trusted_dir), syslog.path, [sys.executable, "-c", FORK_SERVICE])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["UnknownFunctionError", "good"], result  # refused, serves
    syslog.expect(within=2, decision="deny", name="os:system", args="noaudit-token")


def test_daemon_without_an_audit_key_records_where_the_client_cannot_reach(trusted_dir, syslog):
    policy = write_root_file(
        trusted_dir / "noaudit.toml",
        '[context.t-noaudit]\nuser = "nobody"\n\n'
        '[[function]]\ncontext = "t-noaudit"\nname = "security.entrypoints:echo"\n'
        "args.values = { str = true }\n",
    )
    sockets, log = trusted_dir / "sock", str(trusted_dir / "daemon.log")
    serve = [sys.executable, "-m", "privsepd.cli.main", "serve", "--policy", policy,
             "--socket-dir", str(sockets)]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            private_dev_log(str(trusted_dir), syslog.path, serve),
            stdout=out,
            stderr=out,
            env=dict(os.environ, PYTHONPATH=TESTS_DIR),
        )
    try:
        wait_for(
            lambda: daemon_listening(str(sockets / "t-noaudit.sock")) or proc.poll() is not None,
            15,
            "the daemon",
        )
        ctx = Context("t-noaudit", timeout=10, socket_path=str(sockets / "t-noaudit.sock"))
        refused(lambda: ctx._call("call", "os:system", ["noaudit-token"], {}), DeniedError)
        assert ctx._call("call", "security.entrypoints:echo", ["good"], {}) == ["good"]
        ctx.stop()
        syslog.expect(within=2, decision="deny", name="os:system", args="noaudit-token")
    finally:
        proc.kill()
        proc.wait()


def test_spawn_helper_started_under_a_file_size_limit_still_records_or_refuses(spawn):
    with open(spawn.audit.path, "ab") as f:
        f.write(b'{"padding": "' + b"x" * 4096 + b'"}\n')  # the sink is past the limit
    before = len(spawn.audit.records())
    limited = ["sh", "-c", "trap '' XFSZ; ulimit -f 2; exec \"$@\"", "sh"]
    ctx = Context("t-sec", timeout=3, helper_command=limited + spawn_command(spawn.policy))
    try:
        try:
            result = ctx._call("call", "security.entrypoints:echo", ["unaudited-token"], {})
        except Exception as exc:  # refusing to serve, saying why, is the other good answer
            assert "limit" in str(exc).lower() or "audit" in str(exc).lower(), exc
            result = None
    finally:
        ctx.stop()
    if result is not None:
        assert len(spawn.audit.records()) > before, "ATTACK SUCCEEDED: the call ran unrecorded"
        spawn.audit.expect(decision="allow", args="unaudited-token")
    spawn.good_call()


def test_helper_command_record_keeps_argv_as_a_list(targets):
    rule = (
        '\n[[command]]\ncontext = "t-sec"\nname = "true"\nexec = "/bin/true"\nrun_as = "nobody"\n'
    )
    fork = targets.open("fork", extra_policy=rule)
    refused(lambda: fork.execute(["true", "x\ny", "--evil"]), DeniedError)
    fork.good_call()
    record = fork.audit.expect(event="command", decision="deny", argv=argv_has("--evil"))
    assert record["argv"] == ["true", "x\ny", "--evil"], record["argv"]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="NEW (not in issue 9): a command's own record carries no peer uid/pid",
)
@pytest.mark.parametrize("kind", ["spawn", "daemon"])
def test_helper_command_record_names_the_peer(targets, kind):
    rule = (
        '\n[[command]]\ncontext = "t-sec"\nname = "true"\nexec = "/bin/true"\nrun_as = "nobody"\n'
    )
    helper = targets.open(kind, extra_policy=rule)
    refused(lambda: helper.execute(["true", "--peer-token"]), DeniedError)
    helper.good_call()
    record = helper.audit.expect(decision="deny", argv=argv_has("--peer-token"))
    assert (record.get("peer_uid"), record.get("peer_pid")) == (0, os.getpid()), record
