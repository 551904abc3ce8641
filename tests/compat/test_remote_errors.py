"""Exceptions cross with a bounded detail; the client alone re-creates the class."""

from __future__ import annotations

import sys
import types

import msgpack
import pytest
from svcdeps.netlink import NetlinkError
from svcdeps.processutils import ProcessExecutionError

from privsepd.channel.protocol import ClientProtocol, Limits, ServerProtocol, encode_frame
from privsepd.compat.oslo_privsep import _remote, priv_context
from privsepd.errors import (
    DETAIL_BUDGET,
    DETAIL_MAX_STR,
    DeniedError,
    ProtocolError,
    RemoteError,
    exception_detail,
    exception_from_wire,
    exception_to_wire,
)


def roundtrip(exc: BaseException) -> BaseException:
    return _remote.rebuild(exception_from_wire(*exception_to_wire(exc)))


def ready_pair(limits: Limits | None = None):
    client, server = ClientProtocol("t"), ServerProtocol("t", limits or Limits())
    server.receive_data(client.hello())
    client.receive_data(server.take_output())
    return client, server


def test_detail_names_the_class_with_its_args_and_plain_attributes():
    assert exception_detail(NetlinkError(19)) == [
        "svcdeps.netlink",
        "NetlinkError",
        [19, "No such device"],
        {"code": 19},
    ]


def test_privsepd_errors_cross_by_name_without_detail():
    assert exception_detail(DeniedError("no")) is None


def test_a_class_defined_in_a_function_has_no_detail():
    class Local(Exception):
        pass

    assert exception_detail(Local("x")) is None


def test_private_and_non_plain_attributes_are_left_out():
    exc = ValueError("x")
    exc._secret, exc.handle, exc.count = "s", object(), 3
    assert exception_detail(exc)[3] == {"count": 3}


def test_a_non_plain_argument_crosses_as_its_text():
    assert exception_detail(ValueError(object))[2] == ["<class 'object'>"]


def test_long_values_are_cut_and_the_whole_detail_is_bounded():
    exc = ProcessExecutionError("o" * 10**6, "e" * 10**6, 1, "cmd")
    for i in range(16):
        setattr(exc, f"extra{i}", "x" * 10**5)
    detail = exception_detail(exc)
    assert len(detail[2][0]) == DETAIL_MAX_STR
    assert len(msgpack.packb(detail)) <= DETAIL_BUDGET + 1024


def test_reading_the_detail_imports_nothing():
    cls = type("Ghost", (Exception,), {"__module__": "no_such_module_for_privsepd"})
    assert exception_detail(cls("boo"))[:2] == ["no_such_module_for_privsepd", "Ghost"]
    assert "no_such_module_for_privsepd" not in sys.modules


@pytest.mark.parametrize(
    "detail",
    [["m", "q", "not a list", {}], ["m", 1, [], {}], ["m", "q", [], {1: 2}], ["m", "q", []]],
)
def test_the_client_refuses_a_malformed_detail(detail):
    client, _ = ready_pair()
    with pytest.raises(ProtocolError, match="error detail must be"):
        client.receive_data(encode_frame([1, "err", ["X", "m", None, detail]]))


def test_a_detail_too_large_for_the_frame_is_dropped_not_the_error():
    client, server = ready_pair(Limits(max_frame=512))
    frame = server.reply_error(1, "ValueError", "bad", None, ["m", "q", ["x" * 1000], {}])
    (reply,) = client.receive_data(frame)
    assert reply.error == ("ValueError", "bad", None)


def test_attributes_missing_from_args_are_restored():
    exc = ProcessExecutionError(stderr="boom", exit_code=2, cmd="ls")
    exc.args = ("formatted elsewhere",)
    back = roundtrip(exc)
    assert type(back) is ProcessExecutionError
    assert (back.exit_code, back.stderr, back.cmd, back.args) == (
        2,
        "boom",
        "ls",
        ("formatted elsewhere",),
    )


def test_oserror_keeps_errno_strerror_and_filename():
    back = roundtrip(FileNotFoundError(2, "No such file or directory", "/x"))
    assert type(back) is FileNotFoundError
    assert (back.errno, back.strerror, back.filename) == (2, "No such file or directory", "/x")
    assert str(back) == "[Errno 2] No such file or directory: '/x'"


@pytest.mark.parametrize(
    ("module", "qualname"),
    [("builtins", "SystemExit"), ("os", "system"), ("builtins", "KeyboardInterrupt")],
)
def test_names_that_are_not_exception_classes_are_not_re_created(module, qualname):
    exc = exception_from_wire("X", "m", None, [module, qualname, ["id"], {}])
    assert _remote.rebuild(exc) is exc and type(exc) is RemoteError


def test_an_unimportable_class_stays_a_remote_error():
    exc = exception_from_wire("Ghost", "m", None, ["no_such_module_for_privsepd", "Ghost", [], {}])
    assert _remote.rebuild(exc) is exc
    assert "no_such_module_for_privsepd" not in sys.modules


ctx = priv_context.PrivContext("test_remote_errors", capabilities=[])


@ctx.entrypoint
def raise_client_only() -> None:
    cls = type("Boom", (Exception,), {"__module__": "client_only_for_privsepd"})
    raise cls("client_only_for_privsepd" in sys.modules)


@ctx.entrypoint
def helper_has(module: str) -> bool:
    return module in sys.modules


def test_the_class_is_found_on_the_client_and_never_imported_by_the_helper(root):
    ctx.start(priv_context.Method.FORK)
    try:
        client_only = types.ModuleType("client_only_for_privsepd")
        client_only.Boom = type("Boom", (Exception,), {"__module__": client_only.__name__})
        sys.modules[client_only.__name__] = client_only
        with pytest.raises(client_only.Boom) as caught:
            raise_client_only()
        assert caught.value.args == (False,)
        assert helper_has(client_only.__name__) is False
    finally:
        sys.modules.pop("client_only_for_privsepd", None)
        ctx.stop()
