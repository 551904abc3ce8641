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

Matching cost: a valid pattern whose repeat can split the same text among
its repetitions in more than one way (``(a+)+$``, ``(a|a)*$``,
``(\\w+\\s?)*$``) backtracks exponentially on a crafted argument.
:func:`exponential_reason` finds such repeats statically, over re's own
parse tree; ``compile_regex(..., refuse_exponential=True)`` (native policy,
``Regex(...)``) refuses them. Rootwrap ``.filters`` patterns still load
(oslo compatibility): ``privsepd-rootwrap`` bounds the decision's CPU time,
the loader logs a warning and ``filters check`` reports ``loose-regex``; see
docs/deviations.md, "Regex matching time".
"""

from __future__ import annotations

import re
import sys

from privsepd.errors import PolicyError

TYPE_CHECKING = False  # not typing: privsepd-rootwrap imports this module
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "compile_regex",
    "exponential_reason",
    "show_pattern",
    "sre_parser",
]

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
    refuse_exponential: bool = False,
) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, or PolicyError saying where and why.

    ``path``/``line`` name the policy file, ``rule`` the rule or argument;
    the message always starts with "invalid regex" and names the pattern.
    Compiled patterns come from re's own cache, so calling this per match
    costs a lookup, as ``re.match`` does. ``refuse_exponential`` also refuses
    a pattern :func:`exponential_reason` flags (for formats without an oslo
    precedent: native policy, ``Regex(...)``).
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
        compiled = re.compile(pattern, flags)
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
    if refuse_exponential:
        why = exponential_reason(pattern, flags)
        if why is not None:
            shown = show_pattern(pattern)
            prefix = f"{rule}: " if rule else ""
            raise PolicyError(f"{prefix}regex {shown} backtracks exponentially: {why}", path, line)
    return compiled


# -- matching time: repeats that split the same text in more than one way ------


def sre_parser() -> Any:
    """The regex parser module: re._parser since 3.11, sre_parse before."""
    if sys.version_info >= (3, 11):
        from re import _parser  # type: ignore[attr-defined]
    else:  # pragma: no cover - Python < 3.11
        import sre_parse as _parser
    return _parser


# Characters sets are compared over ASCII, Latin-1 and a few Unicode
# representatives (a digit, letters, spaces, a case-folding oddity): enough to
# tell [a-z] from [0-9] or '/' from \w, which is all the analysis needs.
_ALPHABET = tuple(chr(c) for c in range(256)) + tuple(
    "\u0100\u017f\u0391\u0430\u05d0\u0660\u2028\u3000\uff10\u212a\U0001f600"
)
_ALL = frozenset(_ALPHABET)
_CATEGORY = {
    "DIGIT": r"\d",
    "NOT_DIGIT": r"\D",
    "SPACE": r"\s",
    "NOT_SPACE": r"\S",
    "WORD": r"\w",
    "NOT_WORD": r"\W",
    "LINEBREAK": r"\n",
    "NOT_LINEBREAK": r"[^\n]",
}


def _category_name(code: Any) -> str:
    """``DIGIT`` for sre's ``CATEGORY_(UNI_|LOC_)DIGIT``.

    By its ``name``: PyPy's sre constants print as plain ints.
    """
    name = str(getattr(code, "name", code))
    return name.replace("CATEGORY_", "").replace("UNI_", "").replace("LOC_", "")


class _Analysis:
    """Nullable / first-character / all-character sets over an sre parse tree."""

    def __init__(self, sre: Any, flags: int):
        self.sre = sre
        self.flags = flags
        self.repeats = (sre.MAX_REPEAT, sre.MIN_REPEAT)  # POSSESSIVE_REPEAT never backtracks
        self.atomic = getattr(sre, "ATOMIC_GROUP", None)
        self.zero_width = (sre.AT, sre.ASSERT, sre.ASSERT_NOT)
        self.single = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN)

    def charset(self, op: Any, av: Any) -> frozenset[str]:
        sre = self.sre
        if op is sre.LITERAL:
            found = {chr(av)}
        elif op is sre.NOT_LITERAL:
            found = set(_ALL) - {chr(av)}
        elif op is sre.ANY:
            return _ALL
        else:  # IN
            negate = False
            found = set()
            for o, v in av:
                if o is sre.NEGATE:
                    negate = True
                elif o is sre.LITERAL:
                    found.add(chr(v))
                elif o is sre.RANGE:
                    found.update(c for c in _ALPHABET if v[0] <= ord(c) <= v[1])
                elif o is sre.CATEGORY:
                    cls = _CATEGORY.get(_category_name(v))
                    if cls is None:
                        return _ALL
                    rx = re.compile(cls, self.flags & re.ASCII)
                    found.update(c for c in _ALPHABET if rx.match(c))
                else:
                    return _ALL  # an item this walker does not know: assume anything
            if negate:
                found = set(_ALL) - found
        if self.flags & re.IGNORECASE:
            found |= {c for c in _ALPHABET if c.lower() in found or c.upper() in found}
        return frozenset(found)

    def nullable(self, items: Any) -> bool:
        return all(self.nullable_node(op, av) for op, av in items)

    def nullable_node(self, op: Any, av: Any) -> bool:
        sre = self.sre
        if op in self.single:
            return False
        if op is sre.SUBPATTERN:
            return self.nullable(av[-1])
        if op is self.atomic:
            return self.nullable(av)
        if op is sre.BRANCH:
            return any(self.nullable(alt) for alt in av[1])
        if op in self.repeats or op is getattr(sre, "POSSESSIVE_REPEAT", None):
            return av[0] == 0 or self.nullable(av[2])
        if op is sre.GROUPREF_EXISTS:
            return self.nullable(av[1]) or av[2] is None or self.nullable(av[2])
        return True  # anchors, lookarounds, backreferences (may be empty)

    def chars(self, items: Any) -> frozenset[str]:
        """Every character a match of ``items`` can contain."""
        out: frozenset[str] = frozenset()
        for op, av in items:
            out |= self.chars_node(op, av)
        return out

    def chars_node(self, op: Any, av: Any) -> frozenset[str]:
        sre = self.sre
        if op in self.single:
            return self.charset(op, av)
        if op is sre.SUBPATTERN:
            return self.chars(av[-1])
        if op is self.atomic:
            return self.chars(av)
        if op is sre.BRANCH:
            return frozenset().union(*(self.chars(alt) for alt in av[1]))
        if op in self.repeats or op is getattr(sre, "POSSESSIVE_REPEAT", None):
            return self.chars(av[2]) if av[1] else frozenset()
        if op is sre.GROUPREF_EXISTS:
            return self.chars(av[1]) | (self.chars(av[2]) if av[2] is not None else frozenset())
        if op is sre.GROUPREF:
            return _ALL
        return frozenset()  # zero-width

    def first(self, items: Any) -> frozenset[str]:
        """The characters a non-empty match of ``items`` can start with."""
        out: frozenset[str] = frozenset()
        for op, av in items:
            out |= self.first_node(op, av)
            if not self.nullable_node(op, av):
                break
        return out

    def first_node(self, op: Any, av: Any) -> frozenset[str]:
        sre = self.sre
        if op in self.single:
            return self.charset(op, av)
        if op is sre.SUBPATTERN:
            return self.first(av[-1])
        if op is self.atomic:
            return self.first(av)
        if op is sre.BRANCH:
            return frozenset().union(*(self.first(alt) for alt in av[1]))
        if op in self.repeats or op is getattr(sre, "POSSESSIVE_REPEAT", None):
            return self.first(av[2]) if av[1] else frozenset()
        if op is sre.GROUPREF_EXISTS:
            return self.first(av[1]) | (self.first(av[2]) if av[2] is not None else frozenset())
        if op is sre.GROUPREF:
            return _ALL
        return frozenset()

    # -- the search -------------------------------------------------------------

    def variable_parts(self, items: Any, before: list, after: list):  # noqa: ANN201
        """(node, text before it, text after it) for each part of ``items`` whose
        length varies: a repeat with min < max, or an alternation with an empty
        alternative. ``before``/``after`` are the surrounding elements inside the
        outer repeat's body. Does not enter atomic groups or lookarounds, which
        never give back what they matched."""
        sre = self.sre
        items = list(items)
        for k, (op, av) in enumerate(items):
            pre = before + items[:k]
            post = items[k + 1 :] + after
            if op in self.repeats:
                lo, hi, body = av
                if lo < hi:
                    yield (op, av), pre, post
                if hi > 1:  # inside it, another repetition of its body may follow or precede
                    again = [(sre.MAX_REPEAT, (0, 1, body))]
                    yield from self.variable_parts(body, pre + again, again + post)
                else:
                    yield from self.variable_parts(body, pre, post)
            elif op is sre.SUBPATTERN:
                yield from self.variable_parts(av[-1], pre, post)
            elif op is sre.BRANCH:
                if any(self.nullable(alt) for alt in av[1]):
                    yield (op, av), pre, post
                for alt in av[1]:
                    yield from self.variable_parts(alt, pre, post)
            elif op is sre.GROUPREF_EXISTS:
                for alt in (av[1], av[2]):
                    if alt is not None:
                        yield from self.variable_parts(alt, pre, post)

    def branches(self, items: Any):  # noqa: ANN201
        """Every alternation in ``items``, outside atomic groups and lookarounds."""
        sre = self.sre
        for op, av in items:
            if op is sre.BRANCH:
                yield av[1]
                for alt in av[1]:
                    yield from self.branches(alt)
            elif op in self.repeats:
                yield from self.branches(av[2])
            elif op is sre.SUBPATTERN:
                yield from self.branches(av[-1])

    def repeat_problem(self, lo: int, hi: int, body: Any) -> str | None:
        """Why repeating ``body`` up to ``hi`` times can split one text many ways."""
        outer = _show_repeat(self.sre, lo, hi, body)
        for alts in self.branches(body):
            for i, a in enumerate(alts):
                for b in alts[i + 1 :]:
                    both_empty = self.nullable(a) and self.nullable(b)
                    common = self.first(a) & self.first(b)
                    if both_empty or common:
                        what = (
                            "can both match the empty string"
                            if both_empty and not common
                            else f"can both start with {_show_char(common)}"
                        )
                        first, second = _show_items(self.sre, a), _show_items(self.sre, b)
                        return (
                            f"two alternatives under the repeat {outer} ({first!r} and "
                            f"{second!r}) {what}, so each repetition can match the same text "
                            "two ways; make the alternatives start differently (or merge "
                            "them: (a|a)* is a*)"
                        )
        for (op, av), pre, post in self.variable_parts(body, [], []):
            if op is self.sre.BRANCH:
                into = self.chars([(op, av)])
                unbounded = False
            else:
                into = self.chars(av[2])
                unbounded = av[1] > 1
            inner = _show_items(self.sre, [(op, av)])
            if op is not self.sre.BRANCH and self.nullable(av[2]):
                return (
                    f"nested repeats: {inner} inside {outer} can match the empty string in "
                    "more than one way (no repetition, or one that matches nothing), so each "
                    f"repetition of {outer} can; make the inner repeat's body match at least "
                    "one character ((a?)* is a*, (a*)? is a*)"
                )
            between = post + pre  # the rest of this repetition, then the start of the next
            nxt = self.first(between)
            if unbounded and self.nullable(between):
                nxt |= self.first([(op, av)])  # the same part, one repetition on
            if not (into & nxt):
                continue  # (a?)* and (a?b?)*: re never repeats an empty match
            return (
                f"nested repeats: {inner} inside {outer} can also match the text between "
                "two repetitions, so a string that almost matches splits among the "
                "repetitions in exponentially many ways; rewrite so each repetition starts "
                "or ends with a character the inner part cannot match (as in (/[a-z]+)+), "
                "or flatten it ((a+)+ is a+, (\\w+\\s?)* is [\\w\\s]*)"
            )
        return None

    def walk(self, items: Any) -> str | None:
        sre = self.sre
        for op, av in items:
            if op in self.repeats:
                lo, hi, body = av
                if hi > 1:
                    why = self.repeat_problem(lo, hi, body)
                    if why:
                        return why
                subs = [body]
            elif op is sre.SUBPATTERN:
                subs = [av[-1]]
            elif op is sre.BRANCH:
                subs = list(av[1])
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                subs = [av[1]]
            elif op is self.atomic:
                subs = [av]
            elif op is getattr(sre, "POSSESSIVE_REPEAT", None):
                subs = [av[2]]
            elif op is sre.GROUPREF_EXISTS:
                subs = [s for s in av[1:] if s is not None]
            else:
                continue
            for sub in subs:
                why = self.walk(sub)
                if why:
                    return why
        return None


def exponential_reason(pattern: str, flags: int = 0) -> str | None:
    """Why matching ``pattern`` can take time exponential in the argument, or None.

    A static check over re's parse tree, for each repeat that may run more
    than once: (1) two alternatives inside it can start with the same
    character or both match nothing (``(a|a)*``, ``(a|b|ab)*``); (2) a part
    of variable length inside it (an inner repeat, an optional alternative)
    can also take the text between two repetitions (``(a+)+``,
    ``(\\w+\\s?)*``, ``(aa?)+``, ``(.*a){12}``); (3) an inner repeat's body can
    match nothing (``(/(a?)*)+``: empty two ways). ``(/[a-z]+)+`` passes: the
    inner repeat cannot take the ``/`` that starts the next repetition.
    Conservative (a few unambiguous patterns are flagged, e.g. ``(a+ab)+``);
    a pattern ``compile_regex`` refuses, or one that does not parse, is not
    judged here (None).
    """
    try:
        compile_regex(pattern, flags)  # bounded length and depth: the walk recurses
        sre = sre_parser()
        tree = sre.parse(pattern, flags)
    except Exception:  # noqa: BLE001 - not a pattern: nothing to time
        return None
    analysis = _Analysis(sre, tree.state.flags | flags)
    try:
        return analysis.walk(tree.data)
    except RecursionError:  # pragma: no cover - bounded by MAX_DEPTH
        return "groups nested too deeply to analyse"


# -- showing parts of a parse tree in messages ------------------------------------


def _show_char(chars: frozenset[str]) -> str:
    c = min(chars, key=lambda ch: (not ch.isalnum(), ord(ch)))
    return repr(c)


def _show_repeat(sre: Any, lo: int, hi: int, body: Any) -> str:
    inner = _show_items(sre, body)
    if len(list(body)) > 1 or not (
        inner.startswith("(") or len(inner) <= 2 or inner.startswith("[")
    ):
        inner = f"({inner})"
    if (lo, hi) == (0, sre.MAXREPEAT):
        return inner + "*"
    if (lo, hi) == (1, sre.MAXREPEAT):
        return inner + "+"
    if (lo, hi) == (0, 1):
        return inner + "?"
    if hi == sre.MAXREPEAT:
        return f"{inner}{{{lo},}}"
    return f"{inner}{{{lo},{hi}}}" if lo != hi else f"{inner}{{{lo}}}"


def _show_items(sre: Any, items: Any, limit: int = 40) -> str:
    """A regex spelling of a parse subtree, for messages (not re-parsed)."""
    out = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(re.escape(chr(av)))
        elif op is sre.NOT_LITERAL:
            out.append(f"[^{re.escape(chr(av))}]")
        elif op is sre.ANY:
            out.append(".")
        elif op is sre.IN:
            out.append(_show_class(sre, av))
        elif op is sre.SUBPATTERN:
            out.append(f"({_show_items(sre, av[-1], limit)})")
        elif op is sre.BRANCH:
            out.append("(" + "|".join(_show_items(sre, alt, limit) for alt in av[1]) + ")")
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            out.append(_show_repeat(sre, *av))
        elif op is sre.AT:
            out.append({"AT_BEGINNING": "^", "AT_END": "$"}.get(str(av), "\\b"))
        else:
            out.append("(?...)")
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_class(sre: Any, items: Any) -> str:
    parts = []
    for o, v in items:
        if o is sre.NEGATE:
            parts.append("^")
        elif o is sre.LITERAL:
            parts.append(re.escape(chr(v)))
        elif o is sre.RANGE:
            parts.append(f"{re.escape(chr(v[0]))}-{re.escape(chr(v[1]))}")
        elif o is sre.CATEGORY:
            parts.append(_CATEGORY.get(_category_name(v), "?"))
    if len(parts) == 1 and parts[0].startswith("\\"):
        return parts[0]
    return "[" + "".join(parts) + "]"
