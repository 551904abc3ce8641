"""The forked helper writes its own audit trail, and keeps nothing of the service's environment.

Real helpers, real files: each context here writes to a JSON-lines file in a
root-owned directory, and the tests read what the helper wrote.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess

import pytest
from conftest import in_child

from privsepd import DeniedError, ProtocolError
from privsepd.channel.protocol import OP_EXEC
from privsepd.context import Context
from privsepd.helper.execute import SAFE_PATH

ctx = Context("t-audit", ["CAP_NET_ADMIN"], timeout=10)
root_ctx = Context("t-audit-root", stay_root=True, timeout=10)


@ctx.entrypoint
def echo(*values):
    return list(values)


@ctx.entrypoint
def touch(path: str) -> None:
    with open(path, "w"):
        pass


@ctx.entrypoint
def environment() -> dict:
    return dict(os.environ)


@ctx.entrypoint
def run(argv: list) -> list:
    proc = subprocess.run(argv, capture_output=True)
    return [proc.returncode, proc.stdout, proc.stderr]


@root_ctx.entrypoint
def my_allow_record(path: str, marker: str) -> bool:
    """Inside the call: is the decision to run it already on disk?"""
    with open(path) as f:
        return any(json.loads(line).get("args") == [path, marker] for line in f)


@pytest.fixture
def audit_file(trusted_dir):
    path = trusted_dir / "audit.jsonl"
    for c in (ctx, root_ctx):
        c.stop()
        c.audit_target = str(path)
    yield path
    for c in (ctx, root_ctx):
        c.stop()
        c.audit_target = None


@pytest.fixture
def open_dir(trusted_dir):
    """A directory the helper (nobody) may create files in, next to the audit file."""
    path = trusted_dir / "open"
    path.mkdir()
    path.chmod(0o777)
    return path


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exec_with_a_map_for_argv0_is_denied_and_the_helper_keeps_serving(audit_file):
    ctx.start()
    pid = ctx.helper_pid
    with pytest.raises(DeniedError, match="allows no commands"):
        ctx._call(OP_EXEC, "x", [{b"k": 1}], {})
    assert echo(1) == [1]
    assert ctx.helper_pid == pid  # the helper did not die (it used to exit 70)
    (denied,) = [r for r in records(audit_file) if r["op"] == "exec"]
    assert denied["decision"] == "deny" and denied["args"] == [{"b'k'": 1}]


def test_every_call_is_recorded_with_the_peer(audit_file):
    echo("a", b"b")
    (allowed,) = [r for r in records(audit_file) if r["op"] == "call"]
    assert allowed["decision"] == "allow" and allowed["name"].endswith(":echo")
    assert allowed["args"] == ["a", "b'b'"]
    assert (allowed["peer_pid"], allowed["peer_uid"]) == (os.getpid(), 0)


def test_an_allow_record_is_one_canonical_json_line_with_every_field(audit_file):
    echo("%s", {"k": "v"}, 7)
    (line,) = [x for x in audit_file.read_text().splitlines() if '"op":"call"' in x]
    record = json.loads(line)
    assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert set(record) == {
        *("args", "context", "decision", "name", "op", "ts"),
        *("peer_gid", "peer_pid", "peer_uid"),
    }
    assert record["args"] == ["%s", {"k": "v"}, 7] and record["context"] == "t-audit"
    assert type(record["ts"]) is float


def test_the_allow_record_is_on_disk_before_the_call_runs(audit_file):
    assert my_allow_record(str(audit_file), "first") is True


def test_a_protocol_violation_record_names_the_peer(audit_file):
    ctx.start()
    ctx._channel._sock.sendall(b"\x00\x00\x00\x03\xc1\xc1\xc1")
    with pytest.raises(ProtocolError):
        echo(1)
    (violation,) = [r for r in records(audit_file) if r["decision"] == "protocol-violation"]
    assert violation["peer_pid"] == os.getpid() and violation["peer_uid"] == 0
    assert "malformed frame" in violation["error"]


def test_a_call_whose_record_cannot_be_written_does_not_run(audit_file, open_dir):
    marker = open_dir / "ran"
    audit_file.write_bytes(b"x" * 4096)

    def attempt() -> str:
        # Writes past 2 KiB fail with EFBIG (Python ignores SIGXFSZ): the
        # helper forked from here inherits the limit.
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))
        try:
            touch(str(marker))
            return "ran"
        except DeniedError as exc:
            return str(exc)
        finally:
            ctx.stop()

    outcome = in_child(attempt)
    assert "refused: audit record could not be written" in outcome
    assert "File too large" in outcome
    assert not marker.exists()


def test_fork_mode_helper_drops_the_service_environment(audit_file, monkeypatch, open_dir):
    script = open_dir / "bash_env.sh"
    script.write_text(f"touch {open_dir}/bash_env_ran\n")
    script.chmod(0o644)
    monkeypatch.setenv("LD_PRELOAD", "libc.so.6")
    monkeypatch.setenv("PYTHONPATH", "/tmp/privsepd-evil")
    monkeypatch.setenv("BASH_ENV", str(script))
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = environment()  # the helper forks now, with the environment above
    rc, out, _ = run(["/usr/bin/env"])
    bash_rc, _, _ = run(["/bin/bash", "-c", "true"])
    for name in ("LD_PRELOAD", "PYTHONPATH", "BASH_ENV"):
        assert name not in env, name
        assert f"{name}=".encode() not in out, name
    assert env["PATH"] == SAFE_PATH and env["USER"] == "nobody" and env["LANG"] == "C.UTF-8"
    assert rc == 0 and bash_rc == 0
    assert not (open_dir / "bash_env_ran").exists()


def test_commands_of_a_runner_factory_are_recorded_in_the_contexts_sink(audit_file):
    import textwrap

    from privsepd.helper.execute import runner_factory
    from privsepd.policy.index import FilterIndex
    from privsepd.policy.rootwrap import parse_filters

    filters = textwrap.dedent(
        """
        [Filters]
        true: CommandFilter, /bin/true, root
        """
    )
    index = FilterIndex(parse_filters(filters, "t.filters"), ["/bin"])
    cmd = Context("t-audit-cmd", stay_root=True, command_runner=runner_factory(index))
    cmd.audit_target = str(audit_file)
    try:
        assert cmd.execute(["true"])[0] == 0
        with pytest.raises(DeniedError):
            cmd.execute(["false"])
    finally:
        cmd.stop()
    got = [(r["decision"], r["argv"]) for r in records(audit_file) if "argv" in r]
    assert got == [("allow", ["true"]), ("done", ["true"]), ("deny", ["false"])]


def test_commands_of_a_runner_with_no_sink_are_recorded_by_the_helper(audit_file):
    import textwrap

    from privsepd.helper.execute import CommandRunner
    from privsepd.policy.index import FilterIndex
    from privsepd.policy.rootwrap import parse_filters

    filters = "[Filters]\ntrue: CommandFilter, /bin/true, root\n"
    index = FilterIndex(parse_filters(textwrap.dedent(filters), "t.filters"), ["/bin"])
    cmd = Context("t-audit-own", stay_root=True, command_runner=lambda: CommandRunner(index))
    cmd.audit_target = str(audit_file)
    try:
        assert cmd.execute(["true"])[0] == 0
    finally:
        cmd.stop()
    got = [(r["decision"], r["op"], r["argv"]) for r in records(audit_file) if "argv" in r]
    assert got == [("allow", "exec", ["true"])]
