"""Fuzz target: parse and decide together -- a policy and a command in, a decision out.

Invariant: for any ``.filters`` text or native TOML that loads, and any
argv, ``FilterIndex.match(argv)`` returns a ``Decision`` -- it never raises
and never hangs. An allowed decision is coherent: its rule belongs to the
policy, it runs that rule's absolute executable as the rule's user, and
``plan_for`` turns it into an identity and environment (or DeniedError for
a vanished user). Strict matching never allows what oslo's semantics
refuse, and an allowed rootwrap decision never adds a variable that can
steer a root process (LD_*, PYTHON*, BASH_ENV, ...) to the environment.

Seeds: ``corpus/decide/*.json`` -- a policy, an argv and the decision it
must get (every documented deviation from oslo and every hole issue 9
lists has one), run as ordinary tests.
"""

from __future__ import annotations

import json
import os

import pytest
from fuzzing import bounded, budget, seeds
from hypothesis import given
from hypothesis import strategies as st

from privsepd.errors import DeniedError, PolicyError
from privsepd.helper.execute import plan_for
from privsepd.policy.filters import Decision, dangerous_env_name
from privsepd.policy.index import FilterIndex
from privsepd.policy.native import parse_policy
from privsepd.policy.rootwrap import parse_filters

EXEC_DIRS = ("/sbin", "/usr/sbin", "/bin", "/usr/bin")


def compile_policy(case: dict) -> tuple[list, FilterIndex] | None:
    """The policy's filters and index, or None when it is refused (PolicyError)."""
    try:
        if "toml" in case:
            filters = list(parse_policy(case["toml"], "/fuzz.toml").commands.values())
        else:
            filters = parse_filters(case["filters"], "/fuzz.filters")
    except PolicyError:
        return None
    return filters, FilterIndex(filters, EXEC_DIRS)


def decide(filters: list, index: FilterIndex, argv: list[str]) -> Decision:
    with bounded():
        try:
            decision = index.match(argv)
        except Exception as exc:
            raise AssertionError(f"match raised {exc!r} for {argv!r}") from exc
        assert isinstance(decision, Decision)
        for filt in filters:
            if not hasattr(filt, "patterns"):  # a rootwrap filter: strict never widens
                try:
                    strict = filt.check(argv, strict=True) is None
                    oslo = filt.check(argv, strict=False) is None
                except Exception as exc:
                    raise AssertionError(f"{filt!r} raised {exc!r} for {argv!r}") from exc
                assert oslo or not strict, f"{filt!r} allows {argv!r} that oslo refuses"
        if decision.allowed:
            check_allowed(filters, decision)
    return decision


def check_allowed(filters: list, decision: Decision) -> None:
    rule = decision.filter
    assert any(rule is f for f in filters), f"allowed by a rule not in the policy: {rule!r}"
    assert os.path.isabs(decision.executable) and decision.command[0] == decision.executable
    assert decision.run_as == rule.run_as
    try:
        plan = plan_for(decision)
    except DeniedError:
        return
    assert (plan.uid, plan.gid) == (decision.uid, decision.gid)
    if not hasattr(rule, "patterns"):
        added = [n for n in decision.env if dangerous_env_name(n)]
        assert not added, f"{rule!r} lets {added} into a root command's environment"


# -- seeds ------------------------------------------------------------------------------------

#: Seeds whose decision is wrong today, with the branch that fixes it.
KNOWN_WRONG: dict[str, str] = {}


def _seed(path):
    reason = KNOWN_WRONG.get(path.stem)
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("path", [_seed(p) for p in seeds("decide", "*.json")])
def test_decide_seed_gets_its_decision(path):
    case = json.loads(path.read_text())
    compiled = compile_policy(case)
    assert compiled is not None, "seed policy must load"
    decision = decide(*compiled, case["argv"])
    got = "allow" if decision.allowed else "deny"
    assert got == case["decision"], f"{case['argv']!r}: {got} ({decision.reason})"


# -- generated -----------------------------------------------------------------------------------

RULES = [
    "ip: IpFilter, ip, root",
    "ipns: IpNetnsExecFilter, ip, root",
    "ipns_nobody: IpNetnsExecFilter, ip, nobody",
    "cat: CommandFilter, /bin/cat, nobody",
    "cat_root: CommandFilter, cat, root",
    "ls: RegExpFilter, /bin/ls, root, ls, /var/lib/[a-z]+",
    "sh: RegExpFilter, /bin/sh, root, sh, -c, (echo|kill) [0-9$]+",
    "nice: ChainingRegExpFilter, nice, root, nice, -n, -?[0-9]+",
    "env_a: EnvFilter, env, root, A=, B=, /bin/sh",
    "env_ld: EnvFilter, /usr/bin/env, root, LD_PRELOAD=, true",
    "chown: PathFilter, /bin/chown, root, nobody, /var/lib",
    "chown_slash: PathFilter, /bin/chown, root, pass, /var/lib/",
    "kill: KillFilter, root, /bin/sleep, -9, -HUP",
    "read: ReadFileFilter, /etc/hostname",
    "true: CommandFilter, /bin/true, root",
    "ghost: CommandFilter, /bin/privsepd-no-such, root",
    "baduser: CommandFilter, /bin/true, no-such-user-xyz",
    "chain: ChainingFilter, x, root",
]
WORDS = [
    "ip", "netns", "NETNS", "exec", "e", "-b", "-batch", "--batch", "-force", "-all", "link",
    "cat", "/bin/cat", "/etc/shadow", "ls", "/var/lib/x", "/var/lib/x\n", "/var/libx", "sh",
    "/bin/sh", "-c", "echo 1", "kill $$", "id", "nice", "-n", "5", "-5", "env", "A=1", "B=2",
    "A=", "LD_PRELOAD=/x", "true", "/bin/true", "chown", "nobody", "/var/lib/../etc", "kill",
    "-9", "1", "0x1", " 1", str(os.getpid()), "/etc/hostname", "ns", "", "\x00", "é",
]  # fmt: skip
argv = st.lists(st.sampled_from(WORDS) | st.text(max_size=5), max_size=7)


@budget(300)
@given(
    rules=st.lists(st.sampled_from(RULES), min_size=1, max_size=8), argvs=st.lists(argv, max_size=4)
)
def test_fuzz_rootwrap_policy_and_command_get_a_coherent_decision(rules, argvs):
    compiled = compile_policy({"filters": "[Filters]\n" + "\n".join(rules) + "\n"})
    assert compiled is not None
    for args in argvs:
        decide(*compiled, args)


NATIVE = [
    ("ip", "/usr/sbin/ip", '["link", "set", { ifname = true }, "mtu", { int_range = [68, 9000] }]'),
    ("nice", "/usr/bin/nice", '["-n", { int_range = [-20, 19] }, { chain = true }]'),
    ("true", "/bin/true", "[]"),
    ("cat", "/bin/cat", '[{ rest = { path_under = "/var/lib" } }]\nrun_as = "nobody"'),
    ("sh", "/bin/sh", '["-c", { choice = ["echo 1", "id"] }]'),
    ("env", "/usr/bin/env", '[{ regex = "A=[0-9]+" }, "/bin/sh"]'),
]


def native_rule(name: str, exec_path: str, args: str) -> str:
    return f'[[command]]\nname = "{name}"\nexec = "{exec_path}"\nargs = {args}\n'


@budget(150)
@given(rules=st.sets(st.sampled_from(NATIVE), min_size=1), argvs=st.lists(argv, max_size=4))
def test_fuzz_native_policy_and_command_get_a_coherent_decision(rules, argvs):
    compiled = compile_policy({"toml": "\n".join(native_rule(*r) for r in sorted(rules))})
    assert compiled is not None
    for args in argvs:
        decide(*compiled, args)
