"""``filters learn`` reads every audit format privsepd writes, and the old ones.

The records are written by the real writers (the helper's command runner and
Monitor, privsepd-rootwrap, the syslog sink), then read back by
``load_records``.
"""

from __future__ import annotations

import json
import socket
import textwrap

import pytest
from conftest import needs_posix_spawn, write_rootwrap_conf

import privsepd.audit as audit_module
import privsepd.cli.rootwrap as rootwrap_cli
from privsepd.audit import AuditLog
from privsepd.authoring.learn import load_records, propose
from privsepd.channel.protocol import Request
from privsepd.errors import DeniedError
from privsepd.helper.execute import CommandRunner
from privsepd.helper.monitor import Monitor
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import parse_filters

FILTERS = textwrap.dedent(
    """
    [Filters]
    true: CommandFilter, /bin/true, root
    echo: RegExpFilter, /bin/echo, root, echo, [a-z]+
    """
)


def runner(log: AuditLog) -> CommandRunner:
    index = FilterIndex(parse_filters(FILTERS, "learn.filters"), ["/bin", "/usr/bin"])
    return CommandRunner(index, context="t-learn", audit=log)


def argvs(path, errors=None) -> list[tuple]:
    return [(r.argv, r.denied) for r in load_records([str(path)], errors)]


def test_command_runner_records_are_read_once_per_decision(root, trusted_dir):
    path = trusted_dir / "audit.jsonl"
    run = runner(AuditLog.open(str(path)))
    run.run(["echo", "hello"])
    with pytest.raises(DeniedError):
        run.run(["rm", "-rf", "/"])
    # allow + done for echo, deny for rm: the outcome record repeats the argv
    assert len(path.read_text().splitlines()) == 3
    assert argvs(path) == [(("echo", "hello"), False), (("rm", "-rf", "/"), True)]
    assert len(propose(load_records([str(path)])).rules) == 2


def test_helper_exec_records_of_an_unaudited_runner_are_read(root, trusted_dir):
    path = trusted_dir / "audit.jsonl"
    monitor = Monitor("t-learn", {}, lambda argv, options: [0, b"", b""], AuditLog.open(str(path)))
    monitor.dispatch(Request(1, "exec", "ip", ["ip", "link", "show"], {}))
    assert argvs(path) == [(("ip", "link", "show"), False)]


@needs_posix_spawn
def test_rootwrap_records_are_read(root, trusted_dir, monkeypatch):
    conf = write_rootwrap_conf(trusted_dir, FILTERS, "exec_dirs=/bin\n")
    log_dir = trusted_dir / "log"
    monkeypatch.setattr(audit_module, "SYSLOG_SOCKET", str(trusted_dir / "no-syslog"))
    monkeypatch.setattr(audit_module, "DEFAULT_DIR", str(log_dir))
    monkeypatch.setattr(audit_module, "DEFAULT_FILE", str(log_dir / "audit.jsonl"))
    monkeypatch.setattr(rootwrap_cli, "_audit_log", None)
    assert rootwrap_cli.main(["privsepd-rootwrap", "--no-cache", str(conf), "true"]) == 0
    assert rootwrap_cli.main(["privsepd-rootwrap", "--no-cache", str(conf), "cat", "x"]) == 99
    assert argvs(log_dir / "audit.jsonl") == [(("true",), False), (("cat", "x"), True)]


def test_records_behind_a_syslog_prefix_are_read(trusted_dir):
    sock_path = str(trusted_dir / "dev-log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(sock_path)
    server.settimeout(5)
    try:
        run = runner(AuditLog.open(f"syslog:{sock_path}"))
        with pytest.raises(DeniedError):
            run.run(["ls", "-l", "/root"])
        datagram = server.recv(65536).decode("ascii")
    finally:
        server.close()
    message = datagram.split(">", 1)[1]  # what syslog files keep: tag[pid]: record
    path = trusted_dir / "auth.log"
    path.write_text(f"{datagram}\nDec  2 01:00:00 host {message}\n")
    assert argvs(path) == [(("ls", "-l", "/root"), True)] * 2


def test_old_repr_argv_formats_are_still_read(tmp_path):
    path = tmp_path / "old.jsonl"
    lines = [
        # CommandRunner before argv became a JSON list
        {"event": "command", "decision": "allow", "argv": "['ip', 'link', 'set', 'up']", "rc": 0},
        # the helper's exec record before it carried argv
        {"context": "c", "decision": "allow", "op": "exec", "name": "ip", "args": "['ip', 'addr']"},
        # privsepd-rootwrap has always written a JSON list
        {"event": "rootwrap", "decision": "deny", "argv": ["mount", "/dev/sda1"], "rc": 99},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert argvs(path) == [
        (("ip", "link", "set", "up"), False),
        (("ip", "addr"), False),
        (("mount", "/dev/sda1"), True),
    ]


def test_a_truncated_old_repr_is_reported_not_guessed(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"decision": "allow", "argv": "['cat', '/var/lib/aaaaaa..."}) + "\n")
    errors: list[str] = []
    assert argvs(path, errors) == []
    assert len(errors) == 1 and "old-format repr that is truncated" in errors[0]


def test_a_record_with_truncated_fields_is_reported_not_learned(root, trusted_dir):
    path = trusted_dir / "audit.jsonl"
    run = runner(AuditLog.open(str(path)))
    with pytest.raises(DeniedError):
        run.run(["echo", "X" * 5000])
    errors: list[str] = []
    assert argvs(path, errors) == []
    assert len(errors) == 1 and "truncated when the record was written" in errors[0]


def test_records_that_carry_no_command_are_skipped(tmp_path):
    path = tmp_path / "audit.jsonl"
    lines = [
        {"decision": "allow", "op": "call", "name": "m:f", "args": [1]},
        {"decision": "protocol-violation", "error": "malformed frame", "peer_uid": 1000},
        {"decision": "allow", "op": "connect", "peer_uid": 1000},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    errors: list[str] = []
    assert argvs(path, errors) == [] and errors == []
