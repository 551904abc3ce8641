"""Fuzz target: privsepd.regex ``compile_regex``, the one place a policy regex is compiled.

Invariant: for any pattern text and flags, ``compile_regex`` returns a
compiled pattern or raises ``PolicyError`` whose message names the file and
line it was given and starts the cause with "invalid regex" -- never another
exception (re.error, OverflowError, RecursionError, ValueError...), never a
hang. What it returns matches like ``re.compile`` would.

Seeds: the ``regex-*`` files under ``corpus/filters``, ``corpus/toml`` and
``corpus/decide`` (run by those targets), and the examples below.
"""

from __future__ import annotations

import re

from fuzzing import bounded, budget
from hypothesis import example, given
from hypothesis import strategies as st

from privsepd.errors import PolicyError
from privsepd.regex import compile_regex

FLAGS = st.sampled_from([0, re.ASCII, re.IGNORECASE, re.ASCII | re.IGNORECASE])
ALPHABET = "()[]{}|*+?\\^$.,-:<>=!#0123456789aLuimsxPN "
repeat = st.builds(
    lambda lo, hi, sep: f"a{{{lo}{sep}{hi}}}",
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.sampled_from(["", ","]),
)
nest = st.builds(
    lambda depth, body, group: group * depth + body + ")" * depth,
    st.integers(0, 2000),
    st.sampled_from(["a", "", "a+", "(?u)a"]),
    st.sampled_from(["(", "(?:", "(?=", "(?P<g>"]),
)
piece = st.text(ALPHABET, max_size=12) | repeat | nest | st.sampled_from(["(?u)", "(?a)", "(?L)"])
pattern = st.lists(piece, max_size=6).map("".join) | st.text(max_size=60)


def check(text: str, flags: int) -> None:
    with bounded():
        try:
            compiled = compile_regex(text, flags, path="/etc/privsepd/f.toml", line=3, rule="r")
        except PolicyError as exc:
            message = str(exc)
            assert message.startswith("/etc/privsepd/f.toml:3: r: invalid regex "), message
            return
        except Exception as exc:
            raise AssertionError(f"compile_regex raised {exc!r} for {text!r:.200}") from exc
        assert compiled.pattern == text and compiled.flags & flags == flags


@budget(300)
@given(text=pattern, flags=FLAGS)
@example(text="a{4294967296}", flags=0)
@example(text="(" * 1200 + ")" * 1200, flags=0)
@example(text="(?u)x", flags=re.ASCII)
@example(text="(?a)(?u)x", flags=0)
@example(text="x" * 5000, flags=0)
def test_fuzz_compile_regex_compiles_or_refuses_with_policy_error(text, flags):
    check(text, flags)
