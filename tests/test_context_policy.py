"""A Context that takes its declaration from root-owned TOML policy."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from conftest import proc_status

from privsepd import ConstraintError, PolicyError, UnknownFunctionError
from privsepd.constraints import IntRange
from privsepd.context import Context
from privsepd.policy.loader import load_policy

ctx = Context("t-policy")


@ctx.entrypoint(n=IntRange(0, 100))
def listed(n: int) -> int:
    return n * 2


@ctx.entrypoint
def unlisted() -> str:
    return "should never run"


POLICY = """
[context.t-policy]
capabilities = ["CAP_CHOWN"]
user = "nobody"
timeout = 5.0

[[function]]
context = "t-policy"
name = "{module}:listed"
args.n = {{ int_range = [10, 1000] }}
"""


@pytest.fixture
def policy_file(trusted_dir):
    """A policy file in a root-owned directory chain, so ROOT_ONLY trust applies."""
    path = trusted_dir / "policy.toml"
    path.write_text(textwrap.dedent(POLICY.format(module=__name__)))
    os.chmod(path, 0o644)
    yield str(path)
    ctx.stop()


@pytest.fixture
def started(policy_file):
    ctx.apply_policy(load_policy([policy_file]))
    ctx.start()
    return ctx


def test_helper_holds_the_capabilities_the_policy_declares(started):
    assert int(proc_status(started.helper_pid)["CapEff"].split()[0], 16) == 1 << 0  # CAP_CHOWN
    assert proc_status(started.helper_pid)["Uid"].split()[0] == "65534"


def test_function_the_policy_lists_runs(started):
    assert listed(21) == 42


def test_policy_constraint_is_checked_in_addition_to_the_codes(started):
    with pytest.raises(ConstraintError, match=r"argument 'n' fails int_range \[0, 100\]"):
        listed(500)  # the policy allows up to 1000, the code only 100
    with pytest.raises(ConstraintError, match=r"int_range \[10, 1000\]"):
        listed(5)  # the code allows 5, the policy does not


def test_registered_function_the_policy_does_not_list_is_unknown_to_the_helper(started):
    with pytest.raises(UnknownFunctionError, match="unlisted"):
        unlisted()


def test_policy_without_the_context_is_refused(policy_file):
    other = Context("t-missing")
    with pytest.raises(PolicyError, match="no context 't-missing'"):
        other.apply_policy(load_policy([policy_file]))


def test_policy_commands_are_audited_to_the_contexts_audit_file(trusted_dir):
    audit_path = trusted_dir / "audit.jsonl"
    policy = trusted_dir / "cmd.toml"
    policy.write_text(
        textwrap.dedent(
            f"""
            [context.t-cmd]
            capabilities = []
            user = "nobody"
            audit = "{audit_path}"

            [[command]]
            context = "t-cmd"
            name = "id"
            exec = "/usr/bin/id"
            args = []
            run_as = "nobody"
            """
        )
    )
    os.chmod(policy, 0o644)
    cmd_ctx = Context("t-cmd")
    cmd_ctx.apply_policy(load_policy([str(policy)]))
    try:
        rc, out, _ = cmd_ctx.execute(["/usr/bin/id"])
    finally:
        cmd_ctx.stop()
    assert rc == 0 and b"uid=65534" in out
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    command = [r for r in records if r.get("event") == "command"]
    assert command and command[0]["decision"] == "allow"
    assert "cmd.toml" in command[0]["rule"] and command[0]["run_as"] == "nobody"
