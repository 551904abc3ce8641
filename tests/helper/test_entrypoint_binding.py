"""Entrypoint.bind_checked: the helper's per-call binding equals inspect's, check for check.

A call that passes every parameter of a plain positional signature skips
``inspect.Signature.bind``; whatever the signature and the arguments, the
outcome must be exactly what binding with inspect gives: the same arguments
and keywords, or the same error, with the constraints checked in the same
order.
"""

from __future__ import annotations

import itertools

import pytest

from privsepd.constraints import IntRange, Regex
from privsepd.errors import ConstraintError, DeniedError
from privsepd.helper.monitor import Entrypoint


def f0():
    return None


def f1(a):
    return a


def f2(a, b=2):
    return a, b


def f3(a, /, b):
    return a, b


def f4(*args):
    return args


def f5(a, *, k):
    return a, k


def f6(**kw):
    return kw


ENTRYPOINTS = [
    Entrypoint("f0", f0),
    Entrypoint("f1", f1),
    Entrypoint("f1c", f1, {"a": IntRange(0, 9)}),
    Entrypoint("f2", f2),
    Entrypoint("f2c", f2, {"a": IntRange(0, 9), "b": Regex("[a-z]+")}),
    Entrypoint("f3c", f3, {"b": IntRange(0, 9)}),
    Entrypoint("f4c", f4, {"args": IntRange(0, 9)}),
    Entrypoint("f5", f5),
    Entrypoint("f6", f6),
]
ARGS = [[], [1], [10], ["x"], [1, "ab"], [10, 7], [1, 2], [1, 2, 3]]
KWARGS = [{}, {"b": "ab"}, {"b": 7}, {"a": 1}, {"k": 0}]


def via_inspect(entrypoint: Entrypoint, args: list, kwargs: dict):
    try:
        bound = entrypoint.check(args, kwargs)
    except (DeniedError, ConstraintError) as exc:
        return type(exc), str(exc)
    return tuple(bound.args), bound.kwargs


def via_bind_checked(entrypoint: Entrypoint, args: list, kwargs: dict):
    try:
        call_args, call_kwargs = entrypoint.bind_checked(args, kwargs)
    except (DeniedError, ConstraintError) as exc:
        return type(exc), str(exc)
    return tuple(call_args), call_kwargs


@pytest.mark.parametrize(
    "entrypoint,args,kwargs",
    list(itertools.product(ENTRYPOINTS, ARGS, KWARGS)),
    ids=lambda v: getattr(v, "name", repr(v)),
)
def test_binding_for_a_call_is_what_inspect_binds_or_refuses(entrypoint, args, kwargs):
    assert via_bind_checked(entrypoint, args, kwargs) == via_inspect(entrypoint, args, kwargs)


def test_the_first_failing_constraint_in_parameter_order_is_the_one_reported():
    entrypoint = Entrypoint("f2c", f2, {"a": IntRange(0, 9), "b": Regex("[a-z]+")})
    with pytest.raises(ConstraintError, match="'a'|\\ba\\b"):
        entrypoint.bind_checked([10, 7], {})
    assert via_bind_checked(entrypoint, [10, 7], {}) == via_inspect(entrypoint, [10, 7], {})


def test_a_constraint_added_after_the_entrypoint_was_made_is_still_checked():
    constraints: dict = {}
    entrypoint = Entrypoint("f1", f1, constraints)
    constraints["a"] = IntRange(0, 9)
    with pytest.raises(ConstraintError):
        entrypoint.bind_checked([10], {})
