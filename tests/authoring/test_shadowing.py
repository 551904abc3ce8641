"""``filters check`` (and ``learn``'s review) call a rule shadowed only when it is.

A native ``[[command]]`` keeps its argument patterns outside the INI
``args`` columns, so the checker must compare patterns, context,
capabilities and environment before it says two rules are "identical" or
that one never wins; the runtime matches each context's rules in order.
"""

from __future__ import annotations

from pathlib import Path

from privsepd.authoring.check import check_paths
from privsepd.authoring.learn import review

ROOT = Path(__file__).resolve().parents[2]


def _shadowed(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    path = tmp_path / "p.toml"
    path.write_text(text)
    report = check_paths([str(path)], ownership=False)
    return [(f.rule, f.problem) for f in report.findings if f.code == "shadowed"]


CONTEXT = '[context.c]\ncapabilities = ["CAP_NET_ADMIN"]\n'


def _command(name: str, args: str, extra: str = "", context: str = "c") -> str:
    return (
        f'\n[[command]]\ncontext = "{context}"\nname = "{name}"\n'
        f'exec = "/usr/sbin/ip"\nargs = {args}\n{extra}'
    )


def test_native_rules_with_different_arguments_are_not_shadowed(tmp_path):
    text = CONTEXT + _command("mtu", '["link", "set", { ifname = true }, "mtu", "1400"]')
    text += _command("show", '["-o", "addr", "show", "dev", { ifname = true }]')
    assert _shadowed(tmp_path, text) == []


def test_shipped_demo_policy_has_no_shadowed_rule():
    report = check_paths([str(ROOT / "filters" / "demo.toml")], ownership=False)
    assert [f for f in report.findings if f.code == "shadowed"] == []


def test_identical_native_rules_are_reported_as_identical(tmp_path):
    text = (
        CONTEXT + _command("a", '["-o", "link", "show"]') + _command("b", '["-o", "link", "show"]')
    )
    ((rule, problem),) = _shadowed(tmp_path, text)
    assert rule == "b"
    assert problem.startswith("identical to the rule at")


def test_native_rule_with_same_arguments_but_other_capabilities_never_wins(tmp_path):
    text = CONTEXT + _command("a", '["-o", "link", "show"]')
    text += _command("b", '["-o", "link", "show"]', 'capabilities = ["CAP_NET_ADMIN"]\n')
    ((rule, problem),) = _shadowed(tmp_path, text)
    assert rule == "b"
    assert problem.startswith("never wins: NativeCommand 'a'")


def test_native_rules_with_other_constraints_are_not_shadowed(tmp_path):
    text = CONTEXT + _command("a", '["link", "set", "x", "mtu", { int_range = [68, 1500] }]')
    text += _command("b", '["link", "set", "x", "mtu", { int_range = [68, 9000] }]')
    assert _shadowed(tmp_path, text) == []


def test_same_rule_in_two_contexts_is_not_shadowed(tmp_path):
    text = CONTEXT + '[context.d]\ncapabilities = ["CAP_NET_ADMIN"]\n'
    text += _command("a", '["-o", "link", "show"]') + _command(
        "b", '["-o", "link", "show"]', context="d"
    )
    assert _shadowed(tmp_path, text) == []


def test_learn_review_does_not_call_distinct_proposed_rules_identical():
    proposal = (
        '[[command]]\nname = "ip-1"\nexec = "/usr/sbin/ip"\nargs = ["-o", "link", "show"]\n'
        '\n[[command]]\nname = "ip-2"\nexec = "/usr/sbin/ip"\nargs = ["-o", "addr", "show"]\n'
    )
    assert [f for f in review(proposal, "toml") if f.code == "shadowed"] == []


def test_learn_review_still_reports_a_truly_duplicated_rule():
    rule = 'exec = "/usr/sbin/ip"\nargs = ["-o", "link", "show"]\n'
    proposal = f'[[command]]\nname = "ip-1"\n{rule}\n[[command]]\nname = "ip-2"\n{rule}'
    assert [f.rule for f in review(proposal, "toml") if f.code == "shadowed"] == ["ip-2"]
