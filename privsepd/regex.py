"""Policy regular expressions: the one place a pattern from policy is compiled.

Patterns come from rootwrap ``.filters`` columns, native TOML ``regex``
constraints and ``Regex(...)`` in code. ``re.compile`` raises more than
``re.error``: ``OverflowError`` for a repeat count past re's limit
(``a{4294967296}``), ``RecursionError`` for groups nested deeper than the
interpreter's stack allows (how deep depends on the caller's stack),
``ValueError`` for conflicting flags (``(?u)`` under ``re.ASCII``),
``MemoryError`` for a huge pattern. :func:`compile_regex` turns each of them
into :class:`~privsepd.errors.PolicyError` naming the pattern, the cause and,
when the caller gives them, the file, line and rule, so a loader refuses and
a filter denies with a message instead of a traceback.

Two bounds, checked before compiling, keep the outcome the same whatever the
caller's stack and keep compiling cheap: :data:`MAX_LENGTH` characters and
:data:`MAX_DEPTH` nested groups. Real policy patterns are far below both.

Matching cost is not bounded here: a valid pattern with nested unbounded
repeats (``(a+)+$``) backtracks exponentially on a crafted argument. Native
``regex`` constraints bound the argument (``max_len``); ``filters check``
reports such patterns (``loose-regex``); see docs/deviations.md.
"""

from __future__ import annotations

import re

from privsepd.errors import PolicyError

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "compile_regex", "show_pattern"]

#: Longest pattern accepted (characters).
MAX_LENGTH = 4096
#: Deepest group nesting accepted; re needs about two stack frames per level.
MAX_DEPTH = 100

# What re.compile raises besides re.error (a subclass of Exception): the causes
# above, and the internal errors sre has raised on odd input over the years.
# Not Exception itself: an alarm or a test's hang guard must still get through.
_COMPILE_ERRORS = (
    re.error,
    ValueError,
    TypeError,
    LookupError,
    ArithmeticError,  # OverflowError
    RuntimeError,  # RecursionError
    MemoryError,
    AssertionError,
)


def show_pattern(pattern: str, limit: int = 80) -> str:
    """repr of a pattern for a message, cut to about ``limit`` characters."""
    if len(pattern) <= limit:
        return repr(pattern)
    return f"{pattern[:limit]!r}...[+{len(pattern) - limit} chars]"


def group_depth(pattern: str) -> int:
    """How deeply parentheses nest, outside escapes and character classes.

    Never below the truth for patterns without verbose-mode comments (a
    ``(`` inside ``[...]`` or after ``\\`` opens nothing); the compile
    catches RecursionError anyway for what this misses.
    """
    depth = deepest = 0
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":  # a ']' first in a class is literal
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")" and depth:
            depth -= 1
        i += 1
    return deepest


def compile_regex(
    pattern: object,
    flags: int = 0,
    *,
    path: str | None = None,
    line: int | None = None,
    rule: str | None = None,
) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, or PolicyError saying where and why.

    ``path``/``line`` name the policy file, ``rule`` the rule or argument;
    the message always starts with "invalid regex" and names the pattern.
    Compiled patterns come from re's own cache, so calling this per match
    costs a lookup, as ``re.match`` does.
    """

    def refuse(cause: str) -> PolicyError:
        shown = show_pattern(pattern) if type(pattern) is str else type(pattern).__name__
        prefix = f"{rule}: " if rule else ""
        return PolicyError(f"{prefix}invalid regex {shown}: {cause}", path, line)

    if type(pattern) is not str:
        raise refuse("a pattern must be a string")
    if len(pattern) > MAX_LENGTH:
        raise refuse(f"{len(pattern)} characters long; at most {MAX_LENGTH}")
    if pattern.count("(") > MAX_DEPTH:  # only then can it nest too deep
        depth = group_depth(pattern)
        if depth > MAX_DEPTH:
            raise refuse(f"groups nested {depth} deep; at most {MAX_DEPTH}")
    try:
        return re.compile(pattern, flags)
    except RecursionError:
        raise refuse("groups nested too deeply to compile") from None
    except OverflowError as exc:
        raise refuse(f"a repeat count is too large ({exc})") from None
    except MemoryError:
        raise refuse("too large to compile") from None
    except re.error as exc:
        raise refuse(str(exc)) from None
    except ValueError as exc:
        cause = str(exc)
        if "ASCII and UNICODE" in cause:
            cause += " (privsepd matches ASCII classes: drop the (?u) flag)"
        raise refuse(cause) from None
    except _COMPILE_ERRORS as exc:
        raise refuse(f"{type(exc).__name__}: {exc}") from None
