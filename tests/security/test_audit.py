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


PEER_FIELDS = ("peer_uid", "peer_gid", "peer_pid")
TRUE_RULE = (
    '\n[[command]]\ncontext = "t-sec"\nname = "true"\nexec = "/bin/true"\nrun_as = "nobody"\n'
)


def _peer_of(record: dict) -> dict:
    return {k: record.get(k) for k in PEER_FIELDS}


@pytest.mark.parametrize("kind", ["fork", "spawn", "daemon"])
def test_helper_command_records_name_the_peer(targets, kind):
    """Deny, allow and done records of a command carry the peer, as a call's record does."""
    helper = targets.open(kind, extra_policy=TRUE_RULE)
    refused(lambda: helper.execute(["true", "--peer-token"]), DeniedError)
    assert helper.execute(["true"])[0] == 0
    helper.good_call()
    me = {"peer_uid": 0, "peer_gid": 0, "peer_pid": os.getpid()}  # the service: this process
    records = {
        "deny": helper.audit.expect(
            event="command", decision="deny", argv=argv_has("--peer-token")
        ),
        "allow": helper.audit.expect(
            event="command", decision="allow", argv=lambda a: a == ["true"]
        ),
        "done": helper.audit.expect(event="command", decision="done", argv=lambda a: a == ["true"]),
        "call": helper.audit.expect(decision="allow", name=":echo"),
    }
    assert {what: _peer_of(r) for what, r in records.items()} == dict.fromkeys(records, me)


def test_helper_command_records_have_one_shape_in_every_mode(targets):
    """The same command leaves records with the same fields whichever mode served it."""
    shapes = {}
    for kind in ("fork", "spawn", "daemon"):
        helper = targets.open(kind, extra_policy=TRUE_RULE)
        refused(lambda h=helper: h.execute(["true", "--shape"]), DeniedError)
        assert helper.execute(["true"])[0] == 0
        helper.good_call()
        deny = helper.audit.expect(event="command", decision="deny", argv=argv_has("--shape"))
        done = helper.audit.expect(event="command", decision="done", argv=lambda a: a == ["true"])
        varying = {"ts", "duration_ms", "peer_pid"}
        shapes[kind] = {
            what: {
                k: str(v).replace(str(helper.dir), "DIR") for k, v in r.items() if k not in varying
            }
            for what, r in (("deny", deny), ("done", done))
        }
    assert shapes["fork"] == shapes["spawn"] == shapes["daemon"], shapes
