"""Regex probing: which attacker-shaped arguments a rootwrap pattern admits.

Regex arguments are judged by probing them with attacker-shaped strings
(``/etc/shadow``, the pattern's own literal prefix followed by ``../``, a
path under ``/tmp``, shell metacharacters) under privsepd's matching rule
(oslo's ``re.match(p + '$')`` *and* ``re.fullmatch``), so a finding always
comes with a concrete argument the rule admits.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from privsepd.authoring.check_base import under_world_writable
from privsepd.errors import PolicyError
from privsepd.regex import compile_regex

__all__ = [
    "admits",
    "admits_injection",
    "backtracking",
    "examples",
    "literal_prefix",
    "probe_path",
    "top_level_branch",
]


def admits(pattern: str, value: str) -> bool:
    """True if privsepd's rootwrap matching accepts value (oslo's AND full match)."""
    try:
        return (
            compile_regex(pattern + "$").match(value) is not None
            and compile_regex(pattern).fullmatch(value) is not None
        )
    except PolicyError:  # does not compile: the rule never matches
        return False


def sre_parser() -> Any:
    """The regex parser module: re._parser since 3.11, sre_parse before."""
    if sys.version_info >= (3, 11):
        from re import _parser  # type: ignore[attr-defined]
    else:
        import sre_parse as _parser
    return _parser


def literal_prefix(pattern: str) -> str:
    """The literal characters a pattern starts with ('' if none or unparsable)."""
    try:
        _parser = sre_parser()
        tree = _parser.parse(pattern)
    except Exception:  # noqa: BLE001 - any parse trouble: no prefix
        return ""
    out = []
    for op, av in tree.data:
        if op is _parser.LITERAL:
            out.append(chr(av))
        else:
            break
    return "".join(out)


def top_level_branch(pattern: str) -> bool:
    """True if the pattern has a '|' outside any group."""
    depth = 0
    escaped = False
    in_class = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
    return False


def _parse(pattern: str):
    try:
        compile_regex(pattern)  # bounded length and depth: the walkers below recurse
        _parser = sre_parser()
        return _parser, _parser.parse(pattern)
    except Exception:  # noqa: BLE001 - an unparsable pattern has no examples
        return None, None


_EXAMPLE_CAP = 64


def examples(pattern: str) -> list[str]:
    """A few strings the pattern admits: every branch, each repeat 0/1/2 times.

    Enough to see where a pattern can lead (``(/var)?/tmp/...`` reaches /tmp)
    without a regex-intersection engine; only admitted strings are returned.
    """
    sre, tree = _parse(pattern)
    if tree is None:
        return []

    def char(items) -> str:
        negate = any(op is sre.NEGATE for op, _ in items)
        if negate:
            banned = set()
            for op, av in items:
                if op is sre.LITERAL:
                    banned.add(chr(av))
                elif op is sre.RANGE:
                    banned.update(chr(c) for c in range(av[0], min(av[1], av[0] + 256) + 1))
            return next((c for c in "ax0_-." if c not in banned), "")
        for op, av in items:
            if op is sre.LITERAL:
                return chr(av)
            if op is sre.RANGE:
                return chr(av[0])
            if op is sre.CATEGORY:
                return "0" if "DIGIT" in str(av) else ("a" if "WORD" in str(av) else " ")
        return ""

    def seq(data) -> list[str]:
        out = [""]
        for op, av in data:
            alts = node(op, av)
            out = [a + b for a in out for b in alts][:_EXAMPLE_CAP]
        return out

    def node(op, av) -> list[str]:
        if op is sre.LITERAL:
            return [chr(av)]
        if op is sre.NOT_LITERAL:
            return ["a" if chr(av) != "a" else "b"]
        if op is sre.ANY:
            return ["a"]
        if op is sre.IN:
            return [char(av)]
        if op is sre.BRANCH:
            return [x for alt in av[1] for x in seq(alt.data)][:_EXAMPLE_CAP]
        if op is sre.SUBPATTERN:
            return seq(av[-1].data)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            inner = seq(sub.data)
            counts = sorted({lo, min(lo + 1, hi), min(lo + 2, hi)})
            out = []
            for n in counts:
                combos = [""]
                for _ in range(n):
                    combos = [a + b for a in combos for b in inner][:_EXAMPLE_CAP]
                out.extend(combos)
            return out[:_EXAMPLE_CAP]
        return [""]  # anchors, lookarounds, backreferences

    try:
        found = seq(tree.data)
    except Exception:  # noqa: BLE001 - exotic constructs: no examples
        return []
    return [e for e in dict.fromkeys(found) if admits(pattern, e)]


def backtracking(pattern: str) -> bool:
    """True for an unbounded repeat of something that itself repeats unboundedly.

    ``([^/]+/?)*`` can split a long argument in exponentially many ways; a
    body that starts with a separator its inner repeats cannot consume
    (``(/[a-z]+)*``) cannot, and is not reported.
    """
    sre, tree = _parse(pattern)
    if tree is None:
        return False
    repeats = (sre.MAX_REPEAT, sre.MIN_REPEAT)

    def admits_char(op, av, ch: str) -> bool:
        if op is sre.LITERAL:
            return chr(av) == ch
        if op is sre.NOT_LITERAL:
            return chr(av) != ch
        if op is sre.ANY:
            return ch != "\n"
        if op is sre.IN:
            negate = any(o is sre.NEGATE for o, _ in av)
            hit = False
            for o, v in av:
                if o is sre.LITERAL and chr(v) == ch:
                    hit = True
                elif o is sre.RANGE and v[0] <= ord(ch) <= v[1]:
                    hit = True
                elif o is sre.CATEGORY:
                    hit = hit or re.fullmatch(r"[\d\w\s]", ch) is not None
            return hit != negate
        return True  # groups, branches: assume the worst

    def inner_repeats(data, sep: str | None) -> bool:
        for op, av in data:
            if op in repeats:
                lo, hi, sub = av
                if hi == sre.MAXREPEAT and (
                    sep is None or any(admits_char(o, v, sep) for o, v in sub.data)
                ):
                    return True
                if inner_repeats(sub.data, sep):
                    return True
            elif op is sre.SUBPATTERN:
                if inner_repeats(av[-1].data, sep):
                    return True
            elif op is sre.BRANCH:
                if any(inner_repeats(alt.data, sep) for alt in av[1]):
                    return True
        return False

    def walk(data) -> bool:
        for op, av in data:
            if op in repeats:
                lo, hi, sub = av
                body = sub.data
                if len(body) == 1 and body[0][0] is sre.SUBPATTERN:
                    body = body[0][1][-1].data
                if hi == sre.MAXREPEAT:
                    sep = chr(body[0][1]) if body and body[0][0] is sre.LITERAL else None
                    if inner_repeats(body, sep):
                        return True
                if walk(sub.data):
                    return True
            elif op is sre.SUBPATTERN:
                if walk(av[-1].data):
                    return True
            elif op is sre.BRANCH:
                if any(walk(alt.data) for alt in av[1]):
                    return True
        return False

    return walk(tree.data)


_ANY_PATHS = ("/etc/shadow", "/root/.ssh/authorized_keys")
_INJECTIONS = ("$(id)", "`id`", ";id;", "|id|", "&&id&&", "\nid\n")


def admits_injection(pattern: str) -> str | None:
    """A string with shell syntax that the pattern admits, if any."""
    prefix = literal_prefix(pattern)
    for inj in _INJECTIONS:
        for value in (inj, prefix + inj):
            if admits(pattern, value):
                return value
    for example in examples(pattern)[:8]:
        for pos in range(len(example) + 1):
            for inj in _INJECTIONS:
                value = example[:pos] + inj + example[pos:]
                if admits(pattern, value):
                    return value
    return None


def probe_path(pattern: str) -> list[tuple[str, str]]:
    """(lint code, admitted example) for each kind of dangerous path a pattern admits.

    ``wildcard-path`` (any absolute path at all) implies the others and is
    reported alone; otherwise ``path-traversal`` and ``world-writable-path``
    are reported independently.
    """
    prefix = literal_prefix(pattern)
    heads = [""]
    if prefix.endswith(("=", ":")) or (prefix.startswith("-") and not prefix.endswith("/")):
        heads.append(prefix)
    for head in heads:
        if all(admits(pattern, head + p) for p in _ANY_PATHS):
            return [("wildcard-path", head + _ANY_PATHS[0])]
    found: list[tuple[str, str]] = []
    stem = prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""
    if stem:
        for value in (
            prefix + "../../../../etc/shadow",
            stem + "../../../../etc/shadow",
            stem + "x/../../../../etc/shadow",
            stem + "..",
        ):
            if admits(pattern, value):
                found.append(("path-traversal", value))
                break
    head = prefix.split("=", 1)[0] + "=" if "=" in prefix else ""
    candidates = [h + v for v in ("/tmp/x", "/var/tmp/x", "/dev/shm/x") for h in ("", head)]
    for candidate in candidates:
        if admits(pattern, candidate):
            found.append(("world-writable-path", candidate))
            return found
    for example in examples(pattern):
        if under_world_writable(example.split("=", 1)[1] if head else example):
            found.append(("world-writable-path", example))
            break
    return found
