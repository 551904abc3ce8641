"""audit.encode_json writes exactly what json.dumps would (records stay parseable).

The audit module encodes records itself so that privsepd-rootwrap need not
import json; every consumer (``privsepd filters learn``, log shippers)
parses them with a real JSON parser, so the text must not drift.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsepd.audit import _encode_py, bound_fields, encode_json


def reference(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


ENCODERS = pytest.mark.parametrize("encode", [encode_json, _encode_py], ids=["c", "python"])


@ENCODERS
@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_encoding_matches_json_dumps_for_any_json_native_value(encode, value):
    assert encode(value) == reference(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8))
def test_bounded_records_round_trip_through_a_json_parser(fields):
    bounded = bound_fields(fields)
    text = encode_json(bounded)
    assert text == reference(bounded)
    assert "\n" not in text and text.isascii()
    assert json.loads(text).keys() == bounded.keys()


@ENCODERS
def test_control_line_separator_and_non_ascii_characters_leave_escaped(encode):
    text = encode({"argv": ["a\nb", "\u2028", "\x00", "é", "\ud800"]})
    assert text == '{"argv":["a\\nb","\\u2028","\\u0000","\\u00e9","\\ud800"]}'


@ENCODERS
@pytest.mark.parametrize("value", [{"k": b"bytes"}, {"k": object()}, {"k": {2.5}}, [bytearray()]])
def test_values_that_are_not_json_native_are_refused(encode, value):
    with pytest.raises(TypeError):
        encode(value)


def test_the_c_encoder_is_used_where_json_has_one():
    import json.encoder

    from privsepd import audit

    # PyPy's json.encoder has no c_make_encoder attribute at all.
    has_c_encoder = getattr(json.encoder, "c_make_encoder", None) is not None
    assert (audit._C_ENCODE is None) == (not has_c_encoder)


# -- RecordTemplate: the helper's per-call "allow" record, constant fields encoded once

from privsepd.audit import MAX_FIELD, MAX_RECORD, RecordTemplate  # noqa: E402


def general_line(before, args, kwargs, after, ts):
    """What AuditLog.record writes for these fields, in the Monitor's order."""
    fields = dict(before)
    fields["args"] = args
    if kwargs:
        fields["kwargs"] = kwargs
    fields.update(after)
    fields["ts"] = ts
    return encode_json(bound_fields(fields))


# Values an entrypoint's caller can send, and some it cannot (bytes, tuples,
# huge strings and ints), so that truncation and fallbacks are exercised.
call_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64 - 2, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.binary(max_size=20)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
    | st.sampled_from(["%s", "%%", "%(x)s", "x" * (MAX_FIELD + 3), "y" * (MAX_RECORD // 3)]),
    lambda inner: (
        st.lists(inner, max_size=70) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=40,
)
statics = st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["args", "ts", "truncated", "peer_pid"]),
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64 - 2, max_value=2**70)
    | st.text(max_size=12)
    | st.sampled_from(["%", "z" * (MAX_FIELD + 1), "w" * (MAX_RECORD // 2)])
    | st.floats(),
    max_size=5,
)
stamps = st.floats() | st.integers()


@settings(max_examples=600, deadline=None)
@given(
    before=statics,
    after=statics,
    args=st.lists(call_values, max_size=70) | call_values,
    kwargs=st.dictionaries(st.text(max_size=10), call_values, max_size=5) | call_values,
    ts=stamps,
)
def test_a_record_template_writes_exactly_what_the_general_path_writes(
    before, after, args, kwargs, ts
):
    template = RecordTemplate(before, after)
    assert template.line(args, kwargs, ts) == general_line(before, args, kwargs, after, ts)


def test_a_template_of_an_allow_record_splices_its_constant_fields():
    before = {"context": "c%s", "decision": "allow", "op": "call", "name": "noop"}
    after = {"peer_pid": 12, "peer_uid": 0, "peer_gid": 0}
    template = RecordTemplate(before, after)
    assert template._formats is not None  # the fast path, not the fallback
    line = template.line(["a", 1], {"k": [None]}, 1.5)
    assert line == general_line(before, ["a", 1], {"k": [None]}, after, 1.5)
    assert json.loads(line)["context"] == "c%s"


def test_a_template_record_near_the_record_budget_is_truncated_like_any_record():
    before = {"context": "c", "decision": "allow", "op": "call", "name": "n"}
    after = {"peer_note": "p" * 1000}
    # The arguments fit in the record's budget; the peer field after them does not.
    args = ["a" * MAX_FIELD] * (MAX_RECORD // MAX_FIELD - 1) + ["b" * 500]
    line = RecordTemplate(before, after).line(args, {}, 2.0)
    assert line == general_line(before, args, {}, after, 2.0)
    assert json.loads(line)["truncated"] is True
