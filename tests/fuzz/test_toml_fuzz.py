"""Fuzz target: the native TOML policy loader (privsepd/policy/native.py ``parse_policy``).

Invariant: for any text, ``parse_policy(text, path)`` returns a
``PolicyFragment`` or raises ``PolicyError`` naming the file -- never another
exception (TypeError, KeyError, re.error, OverflowError, RecursionError...),
never a hang. A fragment it returns is usable: every command rule answers
``check`` for any argv and every function constraint answers ``check`` for
any value with None or ``ConstraintError``.

Generated documents follow the schema (contexts, functions, commands and
constraint tables) with keys and values drawn from valid and invalid pools,
so most examples get past TOML syntax and into the policy reader.

Seeds: ``corpus/toml/*.toml`` and the shipped ``filters/*.toml`` and
``filters/privsepd.d``; ``regex-*`` seeds hold every way ``re.compile``
fails (repeat count past re's limit, nesting past the stack, flag
conflicts, length), refused by privsepd.regex as PolicyError.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fuzzing import REPO, bounded, budget, seeds
from hypothesis import given
from hypothesis import strategies as st

from privsepd.errors import ConstraintError, PolicyError
from privsepd.policy.native import PolicyFragment, parse_policy

PATH = "/etc/privsepd/fuzz.toml"
VALUES = [None, True, 0, -1, 1500, 2**40, 1.5, "", "eth0", "/etc/x", "a" * 40, b"x", [1], {"a": 1}]
ARGVS = [[], ["x"], ["ip", "link", "set", "eth0", "mtu", "1500"], ["cat", "/srv/../etc/shadow"]]

#: Seeds that break the invariant today. NEW: not among issue 9's items.
KNOWN_CRASHERS: dict[str, str] = {}


def load(text: str) -> PolicyFragment | None:
    with bounded():
        try:
            fragment = parse_policy(text, PATH)
        except PolicyError as exc:
            assert PATH in str(exc), f"PolicyError does not name the file: {exc}"
            return None
        except Exception as exc:
            raise AssertionError(f"parse_policy raised {exc!r} for {text!r:.400}") from exc
    assert isinstance(fragment, PolicyFragment)
    return fragment


def use(fragment: PolicyFragment) -> None:
    with bounded():
        for command in fragment.commands.values():
            for argv in ARGVS + [[command.exec_path, "x", "1"]]:
                try:
                    command.check(argv)
                except Exception as exc:
                    raise AssertionError(f"{command!r} raised {exc!r} for {argv!r}") from exc
        for function in fragment.functions.values():
            for arg, constraint in function.constraints.items():
                for value in VALUES:
                    try:
                        constraint.check(arg, value)
                    except ConstraintError:
                        pass
                    except Exception as exc:
                        raise AssertionError(
                            f"{constraint!r} raised {exc!r} for {value!r}"
                        ) from exc


# -- seeds -------------------------------------------------------------------------------------

SEED_FILES = [
    *seeds("toml", "*.toml"),
    *sorted((REPO / "filters").glob("*.toml")),
    *sorted((REPO / "filters" / "privsepd.d").glob("*.toml")),
]


def _seed_param(path):
    reason = KNOWN_CRASHERS.get(path.stem)
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
    return pytest.param(path, marks=marks, id=f"{path.parent.name}/{path.name}")


@pytest.mark.parametrize("path", [_seed_param(p) for p in SEED_FILES])
def test_toml_seed_loads_or_is_refused_and_what_loads_answers(path):
    fragment = load(path.read_bytes().decode("utf-8", errors="surrogateescape"))
    if fragment is not None:
        use(fragment)


def test_shipped_policy_loads():
    for path in SEED_FILES:
        if path.parent.name != "toml":
            assert load(path.read_text()) is not None, path


# -- a small TOML writer for generated documents -----------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(value)


def toml_document(contexts: dict, functions: list, commands: list) -> str:
    out = []
    for name, body in contexts.items():
        out.append(f"[context.{json.dumps(name)}]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
    for kind, items in (("function", functions), ("command", commands)):
        for body in items:
            out.append(f"[[{kind}]]")
            out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


# -- strategies ---------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scalar = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | text
toml_scalar = scalar.filter(lambda v: v is not None)
junk = st.recursive(toml_scalar, lambda i: st.lists(i, max_size=3), max_leaves=5)
PATTERNS = ["[a-z]+", "\\d+", "(", "a|b", ".*", "(a+)+b", "[0-9]{1,3}", "(?i)x", "x{2,1}",
            "a{4294967296}", "(?u)x", "(?L)x", "(" * 600 + ")" * 600]  # fmt: skip
constraint = st.recursive(
    st.one_of(
        st.builds(lambda p, m: {"regex": p, **m}, st.sampled_from(PATTERNS) | text,
                  st.sampled_from([{}, {"max_len": 8}, {"max_len": -1}])),
        st.builds(lambda v: {"choice": v}, st.lists(toml_scalar, max_size=4)),
        st.builds(lambda a, b: {"int_range": [a, b]}, st.integers(-5, 5), st.integers(-5, 5)),
        st.builds(lambda d: {"int_range": d},
                  st.fixed_dictionaries({}, optional={"min": st.integers(), "max": junk})),
        st.builds(lambda p, e: {"path_under": p, "must_exist": e},
                  st.sampled_from(["/srv", "/", "relative", "/a/../b"]) | text, st.booleans()),
        st.sampled_from([{"ip": True}, {"ip": 4}, {"ip": 5}, {"cidr": 6, "strict": False},
                         {"mac": True}, {"ifname": True}, {"str": True, "max_len": 3},
                         {"bytes": True}, {"bool": True}, {"str": False}, {}, {"x": 1},
                         {"regex": "a", "str": True}]),
        st.dictionaries(text, junk, max_size=2),
    ),
    lambda inner: st.builds(lambda items: {"one_of": items}, st.lists(inner, max_size=3)),
    max_leaves=6,
)  # fmt: skip
CAPS = ["CAP_NET_ADMIN", "net_raw", "CAP_NOPE", "", "cap_sys_admin"]
context_body = st.fixed_dictionaries(
    {},
    optional={
        "capabilities": st.lists(st.sampled_from(CAPS) | text, max_size=3) | junk,
        "user": st.sampled_from(["nobody", "root", "toor", "0", "bad name"]) | junk,
        "group": st.sampled_from(["nogroup", "root"]) | junk,
        "stay_root": st.booleans() | junk,
        "umask": st.sampled_from(["0077", "777", "0o77", 63, 512]) | junk,
        "timeout": st.floats() | st.integers() | junk,
        "allow_uids": st.lists(st.integers(-2, 2**33), max_size=3) | junk,
        "allow_gids": st.lists(st.integers(-2, 2**33), max_size=3) | junk,
        "allow_users": st.lists(st.sampled_from(["nobody", "x y"]), max_size=2) | junk,
        "allow_groups": st.lists(st.sampled_from(["nogroup", "$x"]), max_size=2) | junk,
        "audit": st.sampled_from(["syslog", "logger", "/var/log/x", "rel", "none"]) | junk,
        "sandbox": st.fixed_dictionaries(
            {},
            optional={
                "landlock_read": st.lists(st.sampled_from(["/etc", "rel", "/\x00"]), max_size=2),
                "landlock_write": junk,
                "seccomp_deny": st.lists(st.sampled_from(["ptrace", "nope"]), max_size=2),
            },
        )
        | junk,
        "capabilites": junk,  # the misspelling every strict reader must refuse
    },
)
function_body = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["m:f", "pkg.mod:Cls.meth", "m.f", ":f", "m:"]) | junk,
        "context": st.sampled_from(["c", "d"]) | junk,
    },
    optional={
        "timeout": st.floats() | junk,
        "strict": st.booleans() | junk,
        "args": st.dictionaries(st.sampled_from(["a", "b", "1x", "self"]) | text, constraint,
                                max_size=3) | junk,
    },
)  # fmt: skip
TAILS = [{"rest": True}, {"chain": True}, {"rest": {"str": True}}, {"chain": False},
         {"rest": True, "chain": True}]  # fmt: skip
argv_item = text | constraint | st.sampled_from(TAILS)
command_body = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["ip-link", "x", "bad name", ""]) | junk,
        "exec": st.sampled_from(["/usr/sbin/ip", "/bin/../bin/x", "ip", "/bin/x/"]) | junk,
    },
    optional={
        "context": st.sampled_from(["c", "d"]) | junk,
        "args": st.lists(argv_item, max_size=5) | junk,
        "run_as": st.sampled_from(["root", "nobody", "bad name"]) | junk,
        "capabilities": st.lists(st.sampled_from(CAPS), max_size=2) | junk,
        "env": st.dictionaries(st.sampled_from(["LANG", "BAD NAME", "LD_PRELOAD"]), junk,
                               max_size=2) | junk,
        "timeout": st.floats() | junk,
    },
)  # fmt: skip


@budget(100)
@given(doc=st.text(max_size=200))
def test_fuzz_any_text_loads_or_is_refused(doc):
    fragment = load(doc)
    if fragment is not None:
        use(fragment)


@budget(150)
@given(
    contexts=st.dictionaries(st.sampled_from(["c", "d", "bad name", ""]), context_body, max_size=2),
    functions=st.lists(function_body, max_size=2),
    commands=st.lists(command_body, max_size=3),
)
def test_fuzz_schema_shaped_policy_loads_or_is_refused(contexts, functions, commands):
    fragment = load(toml_document(contexts, functions, commands))
    if fragment is not None:
        use(fragment)
