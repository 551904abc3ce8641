"""privsepd.regex: every way re.compile can fail is a PolicyError naming file, rule and cause."""

from __future__ import annotations

import platform
import re
import sys

import pytest

from privsepd.constraints import Regex
from privsepd.errors import PolicyError
from privsepd.regex import MAX_DEPTH, MAX_LENGTH, compile_regex, group_depth


def nested(depth: int) -> str:
    return "(" * depth + "a" + ")" * depth


# pattern, flags, words the cause must contain; each raised something other
# than re.error from re.compile before (or is a bound of our own).
FAILURES = [
    ("a{4294967296}", 0, "repeat count is too large"),  # OverflowError
    ("a{1,4294967296}", 0, "repeat count is too large"),  # OverflowError, range form
    ("a{4294967295}", 0, "repeat count is too large"),  # re's MAXREPEAT itself
    (nested(1200), 0, "nested 1200 deep"),  # RecursionError
    (nested(MAX_DEPTH + 1), 0, f"nested {MAX_DEPTH + 1} deep; at most {MAX_DEPTH}"),
    ("(?u)[a-z]+", re.ASCII, "ASCII and UNICODE flags are incompatible"),  # ValueError
    ("(?a)(?u)x", 0, "ASCII and UNICODE flags are incompatible"),  # ValueError, no flags
    ("(?L)a", 0, "cannot use 'L' flag"),  # re.error
    ("b(", 0, "missing )"),  # re.error
    ("x" * (MAX_LENGTH + 1), 0, f"{MAX_LENGTH + 1} characters long; at most {MAX_LENGTH}"),
]


@pytest.mark.parametrize(
    "pattern, flags, cause", FAILURES, ids=[f"{c[2][:30]}-{i}" for i, c in enumerate(FAILURES)]
)
def test_a_pattern_re_cannot_compile_is_a_policy_error_naming_file_rule_and_cause(
    pattern, flags, cause
):
    with pytest.raises(PolicyError) as info:
        compile_regex(pattern, flags, path="/etc/privsepd/x.toml", line=7, rule="command 'ip'")
    message = str(info.value)
    assert message.startswith("/etc/privsepd/x.toml:7: command 'ip': invalid regex "), message
    assert cause in message, message
    assert (info.value.path, info.value.line) == ("/etc/privsepd/x.toml", 7)
    assert len(message) < 400, "the pattern is shown cut, not whole"


def test_the_bounds_admit_their_limits():
    assert compile_regex(nested(MAX_DEPTH)).fullmatch("a")
    assert compile_regex("x" * MAX_LENGTH).fullmatch("x" * MAX_LENGTH)
    assert compile_regex("a{4294967294}") is not None  # the largest repeat re takes


def test_a_pattern_that_is_not_a_string_is_a_policy_error():
    with pytest.raises(PolicyError, match="invalid regex int: a pattern must be a string"):
        compile_regex(5)


def test_deep_groups_are_a_policy_error_at_any_stack_depth():
    """Within the bound, but compiled with little stack left: still PolicyError, never
    RecursionError (re needs about two frames per level)."""
    pattern = nested(MAX_DEPTH)
    compile_regex(pattern)  # fine at the top
    re.purge()  # re would otherwise answer from its cache without recursing

    def descend(n: int) -> object:
        if n:
            return descend(n - 1)
        try:
            compile_regex(pattern)
        except PolicyError as exc:
            return exc
        return None

    room = 60  # frames left for compile_regex: far fewer than the pattern needs
    depth = sys.getrecursionlimit() - room - len(_stack())
    got = descend(depth)
    if platform.python_implementation() == "PyPy":
        # PyPy's re compiles without recursing at the application level:
        # the pattern simply compiles (got None), it never escapes as RecursionError.
        assert got is None or "nested too deeply to compile" in str(got), got
        return
    assert isinstance(got, PolicyError) and "nested too deeply to compile" in str(got), got


def _stack() -> list:
    import inspect

    return inspect.stack(0)


def test_group_depth_skips_escaped_parentheses_and_classes():
    assert group_depth(r"(a(b)[(]\()") == 2
    assert group_depth("[]()](") == 1  # ']' first in a class is literal
    assert group_depth("[^]((](") == 1
    assert group_depth(r"[\](](") == 1  # an escaped ']' does not end the class


def test_regex_constraint_refuses_every_failure_as_policy_error():
    for pattern, _, cause in FAILURES:
        with pytest.raises(PolicyError, match="invalid regex") as info:
            Regex(pattern)
        if "flags are incompatible" not in cause:
            assert cause in str(info.value)
    with pytest.raises(PolicyError, match="ASCII and UNICODE"):
        Regex("(?u)[a-z]+")  # the constraint always matches ASCII classes
