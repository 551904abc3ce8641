"""privsepd-rootwrap writes its own audit records, before it runs anything.

The shim runs as a real root process; a small harness points its default
sinks (``/dev/log``, ``/var/log/privsepd/audit.jsonl``) at a socket or a
directory of the test, so what it wrote can be read back whatever the host
provides.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import needs_posix_spawn, write_rootwrap_conf

from privsepd.audit import escape_control
from privsepd.cli.rootwrap import _syslog
from privsepd.policy.rootwrap import RootwrapConfig

pytestmark = needs_posix_spawn

HARNESS = textwrap.dedent(
    """
    import sys
    import privsepd.audit as audit
    audit.SYSLOG_SOCKET, audit.DEFAULT_DIR, audit.DEFAULT_FILE = sys.argv[1:4]
    del sys.argv[1:4]
    from privsepd.cli.rootwrap import main
    sys.exit(main())
    """
)

FILTERS = """
[Filters]
touch: RegExpFilter, /usr/bin/touch, root, touch, /.*
cat: CommandFilter, /bin/cat, root
"""


@pytest.fixture
def conf(trusted_dir):
    return write_rootwrap_conf(trusted_dir, FILTERS)


def rootwrap(trusted_dir, conf, *argv, syslog=None, preexec=None):
    """Run the shim with its default sinks redirected into ``trusted_dir``."""
    sinks = [syslog or str(trusted_dir / "no-dev-log"), str(trusted_dir / "log"),
             str(trusted_dir / "log" / "audit.jsonl")]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", HARNESS, *sinks, "--no-cache", conf, *argv],
        capture_output=True,
        timeout=60,
        preexec_fn=preexec,
    )


def file_records(trusted_dir) -> list[dict]:
    path = trusted_dir / "log" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_allowed_command_is_recorded_before_and_after_it_runs(trusted_dir, conf):
    marker = trusted_dir / "ran"
    result = rootwrap(trusted_dir, conf, "touch", str(marker))
    assert result.returncode == 0, result.stderr
    allow, done = file_records(trusted_dir)
    assert allow["decision"] == "allow" and allow["argv"] == ["touch", str(marker)]
    assert allow["event"] == "rootwrap" and "rc" not in allow
    assert done["decision"] == "done" and done["rc"] == 0
    assert os.stat(trusted_dir / "log").st_mode & 0o777 == 0o750


def test_denied_command_is_recorded_with_argv_as_a_json_list(trusted_dir, conf):
    result = rootwrap(trusted_dir, conf, "rm", "-rf", "/x\ny")
    assert result.returncode == 99
    (deny,) = file_records(trusted_dir)
    assert deny["decision"] == "deny" and deny["argv"] == ["rm", "-rf", "/x\ny"]


def test_command_does_not_run_when_its_record_cannot_be_written(trusted_dir, conf):
    marker = trusted_dir / "ran"
    (trusted_dir / "log").mkdir(mode=0o750)
    (trusted_dir / "log" / "audit.jsonl").write_bytes(b"x" * 8192)

    def small_files() -> None:
        import resource

        # Writes past 4 KiB fail (EFBIG: Python ignores SIGXFSZ).
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))

    result = rootwrap(trusted_dir, conf, "touch", str(marker), preexec=small_files)
    assert result.returncode == 126
    assert b"Cannot execute /usr/bin/touch: audit record could not be written" in result.stderr
    assert not marker.exists()


def test_no_audit_sink_means_no_command(trusted_dir, conf):
    marker = trusted_dir / "ran"
    (trusted_dir / "log").mkdir()
    (trusted_dir / "log").chmod(0o777)  # not a trusted place for the trail
    result = rootwrap(trusted_dir, conf, "touch", str(marker))
    assert result.returncode == 126
    assert b"no audit sink" in result.stderr
    assert not marker.exists()


def test_records_go_to_syslog_when_it_listens(trusted_dir, conf):
    path = str(trusted_dir / "dev-log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    try:
        result = rootwrap(trusted_dir, conf, "cat", "/dev/null", syslog=path)
        assert result.returncode == 0, result.stderr
        first = server.recv(65536).decode("ascii")
    finally:
        server.close()
    assert first.startswith("<86>privsepd-rootwrap[")
    record = json.loads(first.split(": ", 1)[1])
    assert record["decision"] == "allow" and record["argv"] == ["cat", "/dev/null"]
    assert not (trusted_dir / "log").exists()


def test_oslo_style_syslog_line_escapes_a_forged_newline(trusted_dir):
    path = str(trusted_dir / "dev-log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    config = RootwrapConfig(path="rootwrap.conf", filters_path=(), exec_dirs=(), use_syslog=True)
    forged = "ls a\nDec  1 00:00:00 host sudo: root : COMMAND=/bin/true"
    try:
        _syslog(config, "privsepd-rootwrap", 40, f"Unauthorized command: {forged}", path)
        data = server.recv(65536)
    finally:
        server.close()
    assert b"\n" not in data
    assert data.endswith(b"\0") and escape_control(forged).encode() in data
