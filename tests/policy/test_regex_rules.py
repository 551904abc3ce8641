"""Policy regexes that re cannot compile, in every format and tool.

oslo.rootwrap wraps its regex match in ``except re.error`` ("DENY:
Badly-formed filter"): such a rule never matches and other rules still
decide. For an OverflowError or RecursionError it crashes with a traceback
(exit 1). privsepd keeps oslo's decision for every compile failure (deny,
exit 99) and says which rule, where and why; the native TOML loader, whose
format has no oslo precedent, refuses the file with PolicyError naming file,
line and rule; the linter reports ``invalid-regex``; convert keeps the rule.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from oslo_rootwrap import wrapper

from privsepd.authoring.check import check_paths
from privsepd.authoring.convert import convert_filters
from privsepd.errors import PolicyError
from privsepd.policy.index import FilterIndex
from privsepd.policy.native import parse_policy
from privsepd.policy.rootwrap import parse_filters

DEEP = "(" * 1200 + "a" + ")" * 1200

#: pattern -> the cause privsepd names; what re.compile raised before.
BROKEN = {
    "a{4294967296}": "repeat count is too large",  # OverflowError: oslo crashes
    DEEP: "nested 1200 deep",  # RecursionError: oslo crashes
    "b(": "missing )",  # re.error: oslo denies
    "(?L)a": "cannot use 'L' flag",  # re.error: oslo denies
}
IDS = ["overflow", "recursion", "unterminated", "locale-flag"]


def load(tmp_path: Path, rules: str) -> tuple[str, FilterIndex]:
    d = tmp_path / "rootwrap.d"
    d.mkdir(exist_ok=True)
    path = d / "t.filters"
    path.write_text("[Filters]\n" + rules)
    return str(path), FilterIndex(parse_filters(path.read_text(), str(path)), ["/bin"])


@pytest.mark.parametrize("pattern", list(BROKEN), ids=IDS)
def test_rootwrap_rule_whose_pattern_does_not_compile_denies_naming_file_rule_and_cause(
    tmp_path, pattern
):
    path, index = load(tmp_path, f"big: RegExpFilter, /bin/echo, root, echo, {pattern}\n")
    decision = index.match(["echo", "a"])
    assert (decision.outcome, decision.rc) == ("no-match", 99)
    (candidate,) = decision.trace
    assert candidate.miss.code == "invalid-regex"
    where = f"{path}:2: big argument 1: invalid regex "
    assert candidate.miss.detail.startswith(where) and BROKEN[pattern] in candidate.miss.detail
    assert decision.reason == f"no filter matched; {candidate.miss.detail}"
    assert (
        decision.message
        == f"Unauthorized command: echo a (no filter matched; {candidate.miss.detail})"
    )
    # oslo's own semantics (strict=False) deny it too, never raise
    assert candidate.filter.check(["echo", "a"], strict=False).code == "invalid-regex"


@pytest.mark.parametrize("pattern", ["b(", "(?L)a"], ids=["unterminated", "locale-flag"])
def test_oslo_denies_a_rule_with_a_bad_regex_and_privsepd_decides_the_same(tmp_path, pattern):
    d = tmp_path / "oslo.d"
    d.mkdir()
    (d / "t.filters").write_text(
        f"[Filters]\nbig: RegExpFilter, /bin/echo, root, echo, {pattern}\n"
    )
    with pytest.raises(wrapper.NoFilterMatched):
        wrapper.match_filter(wrapper.load_filters([str(d)]), ["echo", "a"], ["/bin"])
    assert (
        not load(tmp_path, f"big: RegExpFilter, /bin/echo, root, echo, {pattern}\n")[1]
        .match(["echo", "a"])
        .allowed
    )


def test_oslo_crashes_on_a_repeat_count_re_cannot_hold(tmp_path):
    """What privsepd replaces with a denial: oslo raises OverflowError (exit 1, traceback)."""
    d = tmp_path / "oslo.d"
    d.mkdir()
    (d / "t.filters").write_text(
        "[Filters]\nbig: RegExpFilter, /bin/echo, root, echo, a{4294967296}\n"
    )
    with pytest.raises(OverflowError):
        wrapper.match_filter(wrapper.load_filters([str(d)]), ["echo", "a"], ["/bin"])


def test_a_rule_that_does_not_compile_leaves_the_other_rules_deciding(tmp_path):
    _, index = load(
        tmp_path,
        "big: RegExpFilter, /bin/echo, root, echo, a{4294967296}\n"
        f"deep: ChainingRegExpFilter, /bin/nice, root, nice, {DEEP}\n"
        "good: RegExpFilter, /bin/echo, root, echo, a\n"
        "true: CommandFilter, /bin/true, root\n",
    )
    assert index.match(["echo", "a"]).filter.name == "good"
    assert index.match(["true"]).allowed
    assert not index.match(["nice", "a", "true"]).allowed


def test_strict_mode_refuses_a_unicode_flag_it_cannot_honour_and_says_so(tmp_path):
    path, index = load(tmp_path, "u: RegExpFilter, /bin/echo, root, echo, (?u)[a-z]+\n")
    (filt,) = index.filters
    assert filt.check(["echo", "abc"], strict=False) is None  # oslo's answer: allowed
    miss = filt.check(["echo", "abc"])
    assert miss.code == "regex-unicode" and miss.deviation
    assert miss.detail.startswith(f"{path}:2: u argument 1: invalid regex '(?u)[a-z]+': ")
    assert "drop the (?u) flag" in miss.detail


@pytest.mark.parametrize("pattern", list(BROKEN), ids=IDS)
def test_lint_reports_a_pattern_that_does_not_compile_and_never_raises(tmp_path, pattern):
    path = tmp_path / "x.filters"
    path.write_text(f"[Filters]\nbig: RegExpFilter, /bin/echo, root, echo, {pattern}\n")
    warnings: list = []
    parse_filters(path.read_text(), str(path), warnings, lint=True)
    (warning,) = [w for w in warnings if w.code == "invalid-regex"]
    assert (warning.path, warning.line) == (str(path), 2)
    assert warning.message.startswith("big: invalid regex ") and BROKEN[pattern] in warning.message
    report = check_paths([str(path)], ownership=False)
    assert any(f.code == "never-matches" and f.rule == "big" for f in report.findings), report


def test_filters_check_on_a_file_with_such_patterns_reports_them_without_a_traceback(tmp_path):
    path = tmp_path / "x.filters"
    rules = "".join(
        f"r{i}: RegExpFilter, /bin/echo, root, echo, {p}\n" for i, p in enumerate(BROKEN)
    )
    path.write_text("[Filters]\n" + rules)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "privsepd.cli.main",
            "filters",
            "check",
            "--no-ownership",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result.stderr
    for cause in BROKEN.values():
        assert cause in result.stdout, result.stdout


@pytest.mark.parametrize("pattern", [*BROKEN, "(?u)[a-z]+", "x" * 5000], ids=[*IDS, "u", "long"])
def test_native_policy_with_such_a_regex_is_refused_naming_file_line_and_rule(pattern):
    text = (
        '[[command]]\nname = "true"\nexec = "/bin/true"\n\n'
        f'[[command]]\nname = "re"\nexec = "/bin/echo"\nargs = [{{ regex = {_toml(pattern)} }}]\n'
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "/etc/privsepd/p.toml")
    message = str(info.value)
    assert message.startswith("/etc/privsepd/p.toml:8: "), message
    assert "[[command]] #2 args: invalid regex " in message, message


def test_native_function_argument_regex_that_does_not_compile_is_refused():
    text = (
        '[context.c]\nuser = "nobody"\n\n[[function]]\ncontext = "c"\nname = "os:getpid"\n'
        'args.x = { regex = "a{4294967296}" }\n'
    )
    with pytest.raises(PolicyError, match=r"p\.toml:\d+: .*invalid regex 'a\{4294967296\}'"):
        parse_policy(text, "/etc/privsepd/p.toml")


def test_convert_keeps_a_rule_the_native_loader_would_refuse(tmp_path):
    path = tmp_path / "x.filters"
    path.write_text(
        "[Filters]\nok: RegExpFilter, /bin/echo, root, echo, [a-z]+\n"
        "big: RegExpFilter, /bin/echo, root, echo, a{4294967296}\n"
        "u: RegExpFilter, /bin/echo, root, echo, (?u)[a-z]+\n"
    )
    conv = convert_filters(parse_filters(path.read_text(), str(path)), ["/bin"])
    assert [f.name for f in conv.residual] == ["big", "u"]
    assert conv.converted == 1
    parse_policy(conv.toml, "/converted.toml")  # what it wrote loads


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_an_ordinary_pattern_is_unaffected(tmp_path):
    _, index = load(tmp_path, "e: RegExpFilter, /bin/echo, root, echo, [0-9]+\n")
    assert index.match(["echo", "42"]).allowed
    assert index.match(["echo", "4x"]).trace[0].miss.code == "argument"


@pytest.mark.parametrize("pattern, loose", [("(a+)+", True), ("[a-z]+(/[a-z]+)*", False)])
def test_check_reports_a_native_regex_whose_matching_time_is_exponential(tmp_path, pattern, loose):
    path = tmp_path / "p.toml"
    path.write_text(
        f'[[command]]\nname = "re"\nexec = "/bin/echo"\nargs = [{{ regex = {_toml(pattern)} }}]\n'
    )
    report = check_paths([str(path)], ownership=False)
    found = [f for f in report.findings if f.code == "loose-regex"]
    assert bool(found) == loose, report.findings
    if loose:
        assert "nests unbounded repeats" in found[0].problem and "exponential" in found[0].attack
