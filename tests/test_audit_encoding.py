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
