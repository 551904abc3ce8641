"""Audit sinks: root-owned, opened or refused at start, bounded, one line per record.

Real files in root-owned directories and a real datagram socket standing in
for /dev/log; the tests read back what a reader of the log would see.
"""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

import privsepd.audit as audit_module
from privsepd.audit import MAX_FIELD, MAX_ITEMS, AuditLog, bound_fields, escape_control
from privsepd.errors import AuditError

NOBODY = 65534


@pytest.fixture
def syslog_socket(trusted_dir):
    """A bound datagram socket, like the one syslog/journald listen on at /dev/log."""
    path = str(trusted_dir / "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


# -- file sink ------------------------------------------------------------------------


def test_file_sink_is_created_0600_root_and_takes_one_json_line_per_record(trusted_dir):
    path = trusted_dir / "audit.jsonl"
    log = AuditLog.open(str(path))
    log.record(context="c", decision="deny", argv=["ls", "x"])
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    (line,) = path.read_text().splitlines()
    record = json.loads(line)
    assert record["argv"] == ["ls", "x"] and record["decision"] == "deny"


def test_default_directory_is_created_0750_root(trusted_dir, monkeypatch):
    directory = trusted_dir / "var-log-privsepd"
    monkeypatch.setattr(audit_module, "SYSLOG_SOCKET", str(trusted_dir / "no-syslog"))
    monkeypatch.setattr(audit_module, "DEFAULT_DIR", str(directory))
    monkeypatch.setattr(audit_module, "DEFAULT_FILE", str(directory / "audit.jsonl"))
    log = AuditLog.open(None)
    assert log.description == f"file {directory}/audit.jsonl"
    st = os.stat(directory)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o750)


def test_default_is_syslog_when_the_socket_accepts(syslog_socket, monkeypatch):
    path, sock = syslog_socket
    monkeypatch.setattr(audit_module, "SYSLOG_SOCKET", path)
    AuditLog.open(None).record(decision="allow", op="ping")
    assert b'"op":"ping"' in sock.recv(65536)


def test_no_sink_at_all_is_an_error_that_names_both_and_the_opt_out(trusted_dir, monkeypatch):
    bad = trusted_dir / "bad"
    bad.mkdir(mode=0o777)
    bad.chmod(0o777)
    monkeypatch.setattr(audit_module, "SYSLOG_SOCKET", str(trusted_dir / "no-syslog"))
    monkeypatch.setattr(audit_module, "DEFAULT_DIR", str(bad))
    monkeypatch.setattr(audit_module, "DEFAULT_FILE", str(bad / "audit.jsonl"))
    with pytest.raises(AuditError) as info:
        AuditLog.open(None)
    message = str(info.value)
    assert "no-syslog" in message and str(bad) in message and 'audit = "none"' in message


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_file_sink_in_a_writable_directory_is_refused(trusted_dir, mode):
    directory = trusted_dir / "open"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(AuditError, match=f"audit directory is not trusted.*{directory}"):
        AuditLog.open(str(directory / "audit.jsonl"))
    assert not (directory / "audit.jsonl").exists()


def test_file_sink_in_a_user_owned_directory_is_refused(trusted_dir):
    directory = trusted_dir / "users"
    directory.mkdir(mode=0o755)
    os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(AuditError, match="owned by an untrusted user"):
        AuditLog.open(str(directory / "audit.jsonl"))


def test_existing_file_owned_by_a_user_is_refused(trusted_dir):
    path = trusted_dir / "audit.jsonl"
    path.write_text("")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(AuditError, match="owned by uid 65534, not root"):
        AuditLog.open(str(path))


def test_existing_world_writable_file_is_refused(trusted_dir):
    path = trusted_dir / "audit.jsonl"
    path.write_text("")
    path.chmod(0o666)
    with pytest.raises(AuditError, match="writable by group or others"):
        AuditLog.open(str(path))


def test_symlinked_file_sink_is_refused(trusted_dir):
    (trusted_dir / "audit.jsonl").symlink_to("/etc/passwd")
    before = os.stat("/etc/passwd").st_size
    with pytest.raises(AuditError, match="cannot open audit file"):
        AuditLog.open(str(trusted_dir / "audit.jsonl"))
    assert os.stat("/etc/passwd").st_size == before


def test_relative_path_is_refused():
    with pytest.raises(AuditError, match="absolute"):
        AuditLog.open("audit.jsonl")


def test_logger_target_is_refused_with_the_way_out():
    with pytest.raises(AuditError, match='use "none"'):
        AuditLog.open("logger")


def test_none_is_an_explicit_opt_out_without_a_sink():
    log = AuditLog.open("none")
    assert not log.has_sink and log.fds() == []
    log.record(decision="deny")  # goes nowhere, and says so by has_sink


def test_a_write_the_sink_refuses_is_an_audit_error(trusted_dir):
    path = trusted_dir / "audit.jsonl"
    log = AuditLog.open(str(path))
    os.close(log.fds()[0])
    with pytest.raises(AuditError, match=f"could not be written to file {path}"):
        log.record(decision="allow")


# -- syslog sink -----------------------------------------------------------------------


def test_syslog_record_is_one_authpriv_datagram_with_the_json(syslog_socket):
    path, sock = syslog_socket
    AuditLog.open(f"syslog:{path}").record(context="c", decision="deny", argv=["ls"])
    data = sock.recv(65536).decode()
    prefix = f"<86>privsepd[{os.getpid()}]: "
    assert data.startswith(prefix)
    assert json.loads(data[len(prefix) :])["argv"] == ["ls"]


def test_a_newline_in_a_denied_argv_cannot_forge_a_second_syslog_line(syslog_socket):
    path, sock = syslog_socket
    forged = 'x\n<86>privsepd[1]: {"decision":"allow","argv":["rm","-rf","/"]}'
    odd = "\r\x00\x1b\x85\u2028\u2029é"  # CR, NUL, ESC, NEL, line/paragraph separators
    AuditLog.open(f"syslog:{path}").record(decision="deny", argv=["ls", forged, odd])
    data = sock.recv(65536)
    assert data.startswith(b"<86>privsepd[")
    text = data.decode("ascii")  # every non-ASCII character arrives escaped
    assert not any(ord(ch) < 0x20 for ch in text)
    record = json.loads(text.split(": ", 1)[1])
    assert record["argv"] == ["ls", forged, odd]


def test_syslog_that_cannot_be_reached_is_an_error_naming_the_socket(trusted_dir):
    with pytest.raises(AuditError, match=f"cannot connect to syslog socket {trusted_dir}/none"):
        AuditLog.open(f"syslog:{trusted_dir}/none")


def test_syslog_restart_is_survived_by_reconnecting(trusted_dir):
    path = str(trusted_dir / "log")
    first = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    first.bind(path)
    log = AuditLog.open(f"syslog:{path}")
    first.close()
    os.unlink(path)
    second = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    second.bind(path)
    second.settimeout(5)
    try:
        log.record(decision="allow", op="ping")
        assert b'"op":"ping"' in second.recv(65536)
    finally:
        second.close()


def test_syslog_gone_for_good_is_an_audit_error(trusted_dir):
    path = str(trusted_dir / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    log = AuditLog.open(f"syslog:{path}")
    server.close()
    os.unlink(path)
    with pytest.raises(AuditError, match="could not be written to syslog"):
        log.record(decision="allow")


# -- bounds -----------------------------------------------------------------------------


def test_a_long_string_keeps_1_kib_and_says_how_much_was_cut():
    out = bound_fields({"name": "a" * 5000})
    assert out["name"] == "a" * MAX_FIELD + "...[+3976 chars]"
    assert out["truncated"] is True


def test_a_string_one_past_the_bound_is_cut():
    out = bound_fields({"name": "a" * (MAX_FIELD + 1)})
    assert out["name"] == "a" * MAX_FIELD + "...[+1 chars]"


def test_a_string_of_exactly_the_bound_is_kept_whole():
    out = bound_fields({"name": "a" * MAX_FIELD})
    assert out == {"name": "a" * MAX_FIELD}


def test_argv_keeps_64_items_and_counts_the_rest():
    out = bound_fields({"argv": ["x"] * 1000})
    assert out["argv"] == ["x"] * MAX_ITEMS + ["...[+936 items]"]


def test_argv_of_exactly_64_items_is_kept_whole():
    assert bound_fields({"argv": ["x"] * MAX_ITEMS}) == {"argv": ["x"] * MAX_ITEMS}


def test_a_whole_record_is_bounded_however_many_fields_are_long():
    out = bound_fields({"argv": ["y" * 4000] * 64, "error": "e" * 4000})
    line = json.dumps(out)
    assert len(line) < 20_000


def test_odd_values_become_json_text():
    out = bound_fields({"a": {b"k": {1, 2}}, "b": b"\xff", "c": 2**80, "d": float("nan")})
    assert out == {"a": {"b'k'": "{1, 2}"}, "b": "b'\\xff'", "c": str(2**80), "d": "nan"}
    json.dumps(out, allow_nan=False)


def test_escape_control_keeps_a_syslog_message_on_one_line():
    text = escape_control("Unauthorized command: ls a\nb\r\x00\x1b\u2028\\")
    assert text == "Unauthorized command: ls a\\nb\\r\\x00\\x1b\\u2028\\\\"


# -- a sink that cannot be opened stops the privileged side from starting ----------------


def test_fork_mode_helper_does_not_start_without_its_sink(trusted_dir):
    from privsepd.context import Context

    directory = trusted_dir / "open"
    directory.mkdir()
    directory.chmod(0o777)
    ctx = Context("t-nosink", audit=str(directory / "audit.jsonl"))
    with pytest.raises(AuditError, match="audit directory is not trusted"):
        ctx.start()
    assert ctx.helper_pid is None


def test_daemon_does_not_start_without_its_sink(trusted_dir):
    import subprocess
    import sys

    directory = trusted_dir / "open"
    directory.mkdir()
    directory.chmod(0o777)
    policy = trusted_dir / "policy.toml"
    policy.write_text(f'[context.t-nosink]\naudit = "{directory}/audit.jsonl"\n')
    policy.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "privsepd.cli.main", "serve", "--policy", str(policy),
         "--socket-dir", str(trusted_dir / "sock")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "audit directory is not trusted" in proc.stderr
    assert not (trusted_dir / "sock" / "t-nosink.sock").exists()


def test_none_is_the_one_way_to_run_without_a_sink(trusted_dir):
    from privsepd.context import Context

    ctx = Context("t-nosink", audit="none")
    try:
        ctx.start()
        assert ctx.ping() == "pong"
    finally:
        ctx.stop()
