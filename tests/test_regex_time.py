"""Regex matching time: patterns whose matching can take exponential time.

A repeat that can split one text among its repetitions in many ways
(``(a+)+$``, ``(a|a)*$``, ``(\\w+\\s?)*$``) backtracks exponentially on an
argument that almost matches: about 1 s at 24 characters, doubling per
character. Native policy and ``Regex(...)`` refuse such patterns at load,
naming file, line and rule; rootwrap ``.filters`` patterns load (oslo
compatibility) with a logged warning and a ``filters check`` finding, and
``privsepd-rootwrap`` denies (exit 99, audited) once the decision has used
its CPU bound instead of burning root CPU for hours.
"""

from __future__ import annotations

import glob
import json
import logging
import platform
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import needs_posix_spawn, write_rootwrap_conf

from privsepd.authoring.check import check_paths
from privsepd.cli.rootwrap import DECISION_CPU_SECONDS
from privsepd.constraints import Regex
from privsepd.errors import PolicyError
from privsepd.policy.loader import load_policy
from privsepd.policy.native import parse_policy
from privsepd.policy.rootwrap import parse_filters
from privsepd.regex import compile_regex, exponential_reason

ROOT = Path(__file__).resolve().parent.parent

#: pattern, a crafted argument that almost matches. Each takes seconds or
#: more at these lengths with Python's re (measured: (a+)+$ 1 s at 24 chars).
EXPONENTIAL = [
    ("(a+)+$", "a" * 40 + "!"),
    ("(a*)*$", "a" * 40 + "!"),
    ("(a+)*$", "a" * 40 + "!"),
    ("(a|a)*$", "a" * 40 + "!"),
    ("(a|aa)+$", "a" * 60 + "!"),
    ("(aa?)+$", "a" * 60 + "!"),
    (r"(\w+\s?)*$", "a" * 40 + "!"),
    (r"(\d+\.?)+$", "1" * 40 + "!"),
    ("([^/]+/?)*$", "a" * 40 + "/"),
    ("([a-z/]+/)+$", "a/" * 20 + "!"),
    ("(x[a-z]*)+$", "x" * 40 + "!"),
    ("([a-z]+|-)+$", "a" * 40 + "!"),
    (r"(\s*,\s*)*$", ", " * 30 + "!"),
    ("(.+,)*$", "a," * 30 + "\n"),
    ("(?:a|b|ab)*$", "ab" * 30 + "!"),
    ("([a-z]+[a-z0-9])+$", "a" * 40 + "!"),
    ("(.*a){12}$", "a" * 40 + "!"),
    ("^[/]*([^/\\0]+(/+)?)*$", "a" * 40 + "\\0"),  # cinder-volume.filters
]

#: Real patterns: the shipped samples, nova/neutron/cinder filters, and
#: forms that look nested but cannot split a text two ways.
LINEAR = [
    "[a-z0-9][a-z0-9_-]{0,31}",
    r"-?\d+",
    "(/[a-z]+)+",  # each repetition starts with '/', which [a-z]+ cannot take
    r"(\d{1,3}\.){3}\d{1,3}",
    r"[0-9]+(\.[0-9]+)*",
    r"\d+(,\d+)*",
    "([a-z]+-)*[a-z]+",
    "([^,]+,)*",
    r"(\w+=\w+,)*",
    "(-v|--verbose)+",  # re factors the common '-' out: v vs -verbose
    "(a|ab)*",
    "(ab|a)*c",
    "(a?)*",  # re never repeats an empty match
    r"(-?\d)+",
    "(a++)+",  # possessive: gives nothing back
    "(0x)?[0-9a-f]+",
    "^/var/lib/nova/instances/[^/]+/disk$",
]
if sys.version_info < (3, 11):
    LINEAR.remove("(a++)+")  # possessive repeats are new in 3.11


def _corpus_patterns() -> set[str]:
    """Every RegExpFilter argument of the shipped samples and the OpenStack corpora."""
    found = set()
    files = glob.glob(str(ROOT / "filters" / "**" / "*.filters"), recursive=True)
    files += glob.glob(str(ROOT / "tests" / "data" / "**" / "*.filters"), recursive=True)
    assert len(files) >= 8, files
    for path in files:
        for filt in parse_filters(Path(path).read_text(), path):
            if filt.kind in ("RegExpFilter", "ChainingRegExpFilter"):
                found.update(filt.args)
    return found


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the static check ---------------------------------------------------------------


@pytest.mark.parametrize("pattern, crafted", EXPONENTIAL, ids=[p for p, _ in EXPONENTIAL])
def test_classic_exponential_forms_are_refused_with_the_reason(pattern, crafted):
    with pytest.raises(PolicyError) as info:
        compile_regex(
            pattern, path="/etc/privsepd/p.toml", line=7, rule="r", refuse_exponential=True
        )
    message = str(info.value)
    assert message.startswith(
        f"/etc/privsepd/p.toml:7: r: regex {pattern!r} backtracks exponentially: "
    )
    assert "rewrite" in message or "make the alternatives" in message


@pytest.mark.parametrize("pattern", LINEAR)
def test_common_linear_patterns_are_accepted(pattern):
    assert exponential_reason(pattern) is None
    assert compile_regex(pattern, refuse_exponential=True).pattern == pattern


def test_every_shipped_and_openstack_filter_pattern_is_accepted_but_cinders_nested_repeat():
    flagged = {p for p in _corpus_patterns() if exponential_reason(p) is not None}
    assert flagged == {"^[/]*([^/\\0]+(/+)?)*$"}


def test_a_pattern_that_does_not_compile_is_not_judged_here():
    assert exponential_reason("(a+") is None  # compile_regex names that failure


def test_compile_regex_accepts_exponential_patterns_unless_asked():
    assert compile_regex("(a+)+$").pattern == "(a+)+$"  # .filters: oslo compatibility


@pytest.mark.parametrize("pattern, crafted", EXPONENTIAL[:2], ids=["plus", "star"])
def test_the_crafted_argument_really_is_slow(pattern, crafted):
    """The check is about time: a 23-character argument already takes a measurable while."""
    start = time.process_time()
    assert re.match(pattern, crafted[-23:]) is None
    assert time.process_time() - start > 0.05


# -- native policy and Regex(...) ----------------------------------------------------


def test_native_policy_with_a_nested_repeat_is_refused_at_load_naming_file_line_and_rule(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        '[[command]]\nname = "grep"\nexec = "/bin/grep"\n'
        f'args = ["-e", {{ regex = {_toml("(a+)+$")} }}]\n'
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(path.read_text(), str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:4: [[command]] #1 args")
    assert "regex '(a+)+$' backtracks exponentially: nested repeats: a+ inside (a+)+" in message
    assert "rewrite" in message


def test_regex_constraint_refuses_a_nested_repeat():
    with pytest.raises(PolicyError, match=r"regex '\(a\|a\)\*\$' backtracks exponentially"):
        Regex("(a|a)*$")
    assert Regex("(/[a-z]+)+").matches("/usr/bin")


def test_check_reports_a_native_exponential_regex_as_a_file_that_does_not_load(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        f'[[command]]\nname = "re"\nexec = "/bin/echo"\nargs = [{{ regex = {_toml("(a+)+")} }}]\n'
    )
    (finding,) = [f for f in check_paths([str(path)], ownership=False).findings]
    assert finding.code == "parse-error" and "backtracks exponentially" in finding.problem


# -- rootwrap .filters: load, warn, bound at run time ----------------------------------


FILTERS = """
[Filters]
nested: RegExpFilter, /bin/echo, root, echo, (a+)+$
plain: RegExpFilter, /bin/echo, root, echo, [0-9]+
"""


def test_rootwrap_filters_with_a_nested_repeat_load_and_the_loader_warns(trusted_dir, caplog):
    path = trusted_dir / "t.filters"
    path.write_text(FILTERS)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="privsepd.policy"):
        policy = load_policy([str(path)])
    assert [f.name for f in policy.filters] == ["nested", "plain"]
    (warning,) = [w for w in policy.warnings if w.code == "loose-regex"]
    assert (warning.path, warning.line) == (str(path), 3)
    assert "nested argument 1: regex '(a+)+$' backtracks exponentially" in warning.message
    (record,) = caplog.records
    assert f"{path}:3: nested argument 1" in record.getMessage()


def test_filters_check_reports_the_nested_repeat(tmp_path):
    path = tmp_path / "t.filters"
    path.write_text(FILTERS)
    report = check_paths([str(path)], exec_dirs=["/bin"], ownership=False)
    found = [f for f in report.findings if f.code == "loose-regex"]
    assert [f.rule for f in found] == ["nested"]
    assert "backtracks exponentially" in found[0].problem


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


@pytest.fixture
def conf(trusted_dir):
    return write_rootwrap_conf(trusted_dir, FILTERS)


#: PyPy's regex engine does not check for signals during a match (docs/deviations.md).
cpython_sre = pytest.mark.skipif(
    platform.python_implementation() != "CPython",
    reason="only CPython's re checks for signals inside a match",
)


def rootwrap(trusted_dir, conf, *argv, options=()):
    sinks = [str(trusted_dir / "no-dev-log"), str(trusted_dir / "log"),
             str(trusted_dir / "log" / "audit.jsonl")]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", HARNESS, *sinks, *options, "--no-cache", conf, *argv],
        capture_output=True,
        timeout=30 + 10 * DECISION_CPU_SECONDS,  # unbounded: 2**16 s at 40 characters
    )
    return result, time.monotonic() - start


def audit_records(trusted_dir) -> list[dict]:
    path = trusted_dir / "log" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@cpython_sre
def test_rootwrap_denies_a_crafted_argument_once_the_decision_used_its_cpu_bound(trusted_dir, conf):
    crafted = "a" * 40 + "!"
    result, elapsed = rootwrap(trusted_dir, conf, "echo", crafted)
    assert result.returncode == 99, result.stderr
    assert result.stdout == b""
    assert result.stderr.decode() == (
        f"-c: Unauthorized command: echo {crafted} (deciding took "
        f"more than {DECISION_CPU_SECONDS:g} s of CPU: a filter's regex backtracks on this "
        "argument)\n"
    )
    assert elapsed < 10 + 5 * DECISION_CPU_SECONDS
    (record,) = audit_records(trusted_dir)
    assert (record["decision"], record["rc"], record["argv"]) == ("deny", 99, ["echo", crafted])
    assert "exceeded" in record["reason"] and "CPU" in record["reason"]


@needs_posix_spawn
def test_rootwrap_still_runs_what_the_nested_pattern_admits(trusted_dir, conf):
    result, _ = rootwrap(trusted_dir, conf, "echo", "a" * 40)
    assert (result.returncode, result.stdout) == (0, b"a" * 40 + b"\n"), result.stderr


@cpython_sre
def test_rootwrap_explain_of_a_crafted_argument_is_bounded_too(trusted_dir, conf):
    result, _ = rootwrap(trusted_dir, conf, "echo", "a" * 40 + "!", options=["--explain"])
    assert result.returncode == 99
    assert b"deciding took more than" in result.stderr
