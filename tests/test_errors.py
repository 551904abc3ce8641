"""Exceptions crossing the channel come back as the same type, or RemoteError."""

from __future__ import annotations

import pytest

from privsepd.errors import (
    ConstraintError,
    PolicyError,
    RemoteError,
    exception_from_wire,
    exception_to_wire,
)


def roundtrip(exc: BaseException) -> Exception:
    return exception_from_wire(*exception_to_wire(exc))


def test_oserror_keeps_its_subclass_and_errno():
    back = roundtrip(FileNotFoundError(2, "No such file or directory", "/x"))
    assert type(back) is FileNotFoundError and back.errno == 2
    assert "/x" in str(back)


def test_key_error_message_is_the_key_not_its_repr():
    assert str(roundtrip(KeyError("k"))) == "'k'"


def test_constraint_error_keeps_its_message_and_defines_its_fields():
    back = roundtrip(ConstraintError("mtu", "int_range [68, 9000]", "too big"))
    assert type(back) is ConstraintError
    assert str(back) == "argument 'mtu' fails int_range [68, 9000]: too big"
    assert (back.argument, back.rule) == (None, None)


def test_policy_error_defines_path_line_and_reason():
    back = roundtrip(PolicyError("bad key", "/etc/x.toml", 3))
    assert (back.path, back.line, back.reason) == (None, None, "/etc/x.toml:3: bad key")


def test_unlisted_exception_type_becomes_remote_error_and_imports_nothing():
    class Custom(Exception):
        pass

    back = roundtrip(Custom("boom"))
    assert type(back) is RemoteError
    assert (back.type_name, back.remote_message) == ("Custom", "boom")


@pytest.mark.parametrize(
    "name", ["BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "object"]
)
def test_base_exceptions_and_odd_names_never_cross_as_themselves(name):
    assert type(exception_from_wire(name, "x", None)) is RemoteError
