"""privsepd._record.record: the namedtuple behaviour privsepd's records rely on."""

from __future__ import annotations

import pickle

import pytest

from privsepd._record import record
from privsepd.errors import RemoteDetail
from privsepd.policy.filters import Miss, Source


def test_a_record_is_a_tuple_of_its_fields_in_order():
    s = Source("f", 2, "n")
    assert (isinstance(s, tuple), tuple(s), s.path, s.line, s.name) == (
        True,
        ("f", 2, "n"),
        "f",
        2,
        "n",
    )


def test_fields_may_be_given_by_keyword():
    assert Source("f", name="n", line=2) == Source(path="f", line=2, name="n") == ("f", 2, "n")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("f", 2), {}), (("f", 2, "n", "x"), {}), (("f",), {"name": "n"}), (("f", 2, "n"), {"x": 1})],
    ids=["too-few", "too-many", "a-middle-field-missing", "unknown-keyword"],
)
def test_a_wrong_set_of_fields_is_a_type_error(args, kwargs):
    with pytest.raises(TypeError, match="Source"):
        Source(*args, **kwargs)


def test_fields_cannot_be_assigned_or_added():
    s = Source("f", 2, "n")
    with pytest.raises(AttributeError):
        s.path = "g"
    with pytest.raises(AttributeError):
        s.other = 1


def test_replace_returns_a_new_record_of_the_subclass():
    s = Source("f", 2, "n")
    changed = s._replace(line=3)
    assert (type(changed), changed, s) == (Source, ("f", 3, "n"), ("f", 2, "n"))
    with pytest.raises(TypeError, match="no field"):
        s._replace(column=1)


def test_repr_names_the_type_and_each_field():
    assert repr(record("Point", ("x", "y"))(1, "a")) == "Point(x=1, y='a')"


@pytest.mark.parametrize(
    "value",
    [Source("f", 2, "n"), Miss("argument", "d"), RemoteDetail("m", "q", [1], {"a": 2})],
    ids=["Source", "Miss", "RemoteDetail"],
)
def test_records_survive_pickling_with_their_type(value):
    copy = pickle.loads(pickle.dumps(value))
    assert (type(copy), copy) == (type(value), value)


def test_fields_lists_the_names_in_order():
    assert (Source._fields, Miss._fields) == (("path", "line", "name"), ("code", "detail"))
