"""Red team, channel: a compromised service writes whatever it likes to its socket.

Every test runs against each helper mode (``helper`` is parametrized over
fork, spawn and daemon) and asserts three things: the attempt is refused
(an error reply, or the connection closed with the reason); the target
still serves a good call; and the helper's own audit file names the attempt.
"""

from __future__ import annotations

import os

import msgpack
import pytest

from privsepd import UnknownFunctionError
from privsepd.channel.protocol import DEFAULT_LIMITS
from privsepd.paths import O_PATH

from .attack import (
    EXEC_OR_COMMAND,
    depth,
    fd_count,
    fn,
    frame,
    nested,
    packed,
    refused,
    send_with_fds,
)

LIMITS = DEFAULT_LIMITS


# -- names --------------------------------------------------------------------------


def test_helper_unknown_function_name_is_refused(helper):
    refused(lambda: helper.call("os:system", "id"), UnknownFunctionError, match="os:system")
    helper.good_call()
    helper.audit.expect(decision="deny", name="os:system", error="UnknownFunctionError")


PRIVATE_NAMES = [
    fn("_private"),  # in the module, not an entrypoint
    fn("echo.__globals__"),  # attribute walk from an allowed function
    fn("echo.__wrapped__"),
    "privsepd.helper.monitor:Monitor.dispatch",  # privsepd's own internals
    "builtins:eval",
    "",
]


def test_helper_private_and_internal_names_are_refused(helper):
    for name in PRIVATE_NAMES:
        refused(lambda n=name: helper.call(n), UnknownFunctionError)
    helper.good_call()
    for name in PRIVATE_NAMES:
        helper.audit.expect(decision="deny", op="call", name=lambda got, n=name: got == n)


def test_helper_function_of_another_context_is_refused(helper):
    refused(lambda: helper.call("other_secret"), UnknownFunctionError, match="other_secret")
    helper.good_call()
    helper.audit.expect(decision="deny", name=fn("other_secret"))


def test_helper_function_registered_in_code_but_absent_from_policy_is_refused(helper):
    refused(lambda: helper.call("unlisted"), UnknownFunctionError, match="unlisted")
    helper.good_call()
    helper.audit.expect(decision="deny", name=fn("unlisted"))


# -- frames ---------------------------------------------------------------------------


def test_helper_oversize_frame_is_refused_before_it_is_read(helper):
    peer = helper.raw()
    peer.send((LIMITS.max_frame + 1).to_bytes(4, "big"))
    peer.expect_violation("exceeds limit")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error=f"{LIMITS.max_frame + 1} bytes")


def test_helper_frame_one_level_deeper_than_the_limit_is_refused(helper):
    peer = helper.raw()
    at_limit = [1, "call", fn("echo"), [nested(LIMITS.max_depth - 2)], {}]
    assert depth(at_limit) == LIMITS.max_depth
    peer.send_msg(at_limit)  # served (its argument fails echo's constraint, nothing more)
    peer.expect_error(1, "ConstraintError")
    too_deep = [2, "call", fn("echo"), [nested(LIMITS.max_depth - 1)], {}]
    peer.send_msg(too_deep)
    peer.expect_violation(f"deeper than {LIMITS.max_depth}")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="nested deeper")


def test_helper_frame_with_too_many_containers_is_refused(helper):
    peer = helper.raw()
    half = LIMITS.max_containers_total // 2
    peer.send_msg([1, "call", fn("echo"), [[[]] * half, [[]] * half], {}])
    peer.expect_violation("arrays/maps")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="arrays/maps")


def test_helper_array_longer_than_the_limit_is_refused(helper):
    peer = helper.raw()
    peer.send_msg([1, "call", fn("echo"), list(range(LIMITS.max_container + 1)), {}])
    peer.expect_violation("malformed frame")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="malformed frame")


def test_helper_truncated_msgpack_inside_a_frame_is_refused(helper):
    peer = helper.raw()
    whole = packed([1, "call", fn("echo"), ["truncated-token"], {}])
    peer.send(frame(whole[:-4]))
    peer.expect_violation("malformed frame")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="malformed frame")
    assert not helper.audit.mentions("truncated-token")


def test_helper_interleaved_frames_are_refused_and_neither_runs(helper):
    peer = helper.raw()
    first = frame(packed([1, "call", fn("echo"), ["first-token"], {}]))
    second = frame(packed([2, "call", fn("echo"), ["second-token"], {}]))
    peer.send(first[:10] + second + first[10:])  # two writers sharing a socket, unlocked
    peer.expect_violation()
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation")
    assert not helper.audit.find(decision="allow", args="first-token")
    assert not helper.audit.find(decision="allow", args="second-token")


@pytest.mark.parametrize(
    "value",
    [msgpack.ExtType(42, b"payload"), msgpack.Timestamp(0), msgpack.ExtType(1, b"x" * 200)],
    ids=["ext-42", "timestamp", "ext-oversize"],
)
def test_helper_msgpack_extension_types_are_refused(helper, value):
    peer = helper.raw()
    peer.send_msg([1, "call", fn("echo"), [value], {}])
    reason = peer.expect_violation()
    assert any(w in reason for w in ("extension type", "cannot cross", "malformed")), reason
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error=reason)


@pytest.mark.parametrize("rid", [0, 2**63, True, "1"], ids=repr)
def test_helper_spoofed_request_id_is_refused(helper, rid):
    peer = helper.raw()
    peer.request(rid, "call", fn("echo"), ["spoofed-token"])
    peer.expect_violation("request id must be a positive integer")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="request id")
    assert not helper.audit.mentions("spoofed-token")


def test_helper_reused_request_id_gets_every_call_judged_and_recorded(helper):
    peer = helper.raw()
    peer.request(7, "call", fn("echo"), ["reused-token"])
    peer.request(7, "call", "os:system", ["id"])
    replies = [peer.reply(7), peer.reply(7)]
    assert sorted(r[1] for r in replies) == ["err", "ok"]  # each judged on its own
    assert any(r[2][0] == "UnknownFunctionError" for r in replies if r[1] == "err")
    helper.good_call()
    helper.audit.expect(decision="allow", args="reused-token")
    helper.audit.expect(decision="deny", name="os:system")


def test_helper_log_frame_forged_by_the_client_is_refused(helper):
    peer = helper.raw()
    peer.send_msg([0, "log", [40, "privsepd.audit", '{"decision": "allow", "forged": true}']])
    peer.expect_violation("5-item array")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation")
    assert not helper.audit.find(forged=lambda v: v is not None)


def test_helper_second_hello_after_the_handshake_is_refused(helper):
    peer = helper.raw()
    peer.hello()
    peer.expect_violation("5-item array")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="5-item array")


def test_helper_unknown_operation_is_refused(helper):
    peer = helper.raw()
    peer.request(1, "eval", "__import__('os').system('id')")
    peer.expect_violation("unknown operation 'eval'")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="unknown operation")


def test_helper_kwargs_with_bytes_keys_are_refused(helper):
    peer = helper.raw()
    peer.request(1, "call", fn("echo"), [], {b"values": "x"})
    peer.expect_violation("string keys")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="string keys")


def test_helper_hello_for_another_context_is_refused(helper):
    peer = helper.connect()
    peer.hello(context="t-sec-other")
    peer.expect_violation("context mismatch")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="context mismatch")


def test_helper_descriptors_passed_with_a_request_never_reach_it(helper):
    peer = helper.raw()
    pid = peer.helper.pid
    before = fd_count(pid)
    passed = [os.open("/", O_PATH | os.O_CLOEXEC) for _ in range(32)]
    try:
        data = frame(packed([1, "call", "os:system", ["fd-token"], {}]))
        send_with_fds(peer.sock, data, passed)
    finally:
        for fd in passed:
            os.close(fd)
    peer.expect_error(1, "UnknownFunctionError")
    assert fd_count(pid) <= before, os.listdir(f"/proc/{pid}/fd")
    assert peer.call(fn("echo"), "after-fds", rid=2) == ["after-fds"]
    helper.good_call()
    helper.audit.expect(decision="deny", name="os:system", args="fd-token")


def test_helper_request_flood_is_answered_in_full_and_recorded(helper):
    peer = helper.raw()
    n = 2000
    peer.send(b"".join(frame(packed([i, "call", "os:system", [i], {}])) for i in range(1, n + 1)))
    for i in range(1, n + 1):
        peer.expect_error(i, "UnknownFunctionError")
    helper.good_call()
    assert len(helper.audit.find(decision="deny", name="os:system")) == n


# -- holes listed in issue 9 (the fix lands from another branch) -------------------------


def test_helper_exec_whose_argv0_is_a_map_with_bytes_keys_is_refused(helper):
    peer = helper.raw()
    peer.request(1, "exec", "x", [{b"k": 1}])
    peer.expect_error(1, "DeniedError")
    assert peer.call(fn("echo"), "after-map", rid=2) == ["after-map"]
    helper.good_call()
    helper.audit.expect(decision="deny", op=EXEC_OR_COMMAND)


@pytest.mark.parametrize("version", [True, 1.0], ids=repr)
def test_helper_protocol_version_that_is_not_an_int_is_refused(helper, version):
    peer = helper.connect()
    peer.hello(version=version)
    peer.expect_violation("version")
    peer.expect_clean_exit()
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error="version")


def test_helper_megabyte_function_name_leaves_a_bounded_audit_record(helper):
    helper.good_call()
    before = helper.audit.size()
    huge = helper.raw()
    huge.request(1, "call", "n" * (1 << 20))
    huge.expect_violation(str(1 << 20))  # names are bounded in the protocol itself
    long = helper.raw()
    long.request(1, "call", "m" * (LIMITS.max_name - 1))  # fits the protocol, not a record
    long.expect_error(1, "UnknownFunctionError")
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", error=str(1 << 20))
    helper.audit.expect(decision="deny", name="mmmm")
    grown = helper.audit.size() - before
    assert grown < 16 * 1024, f"two refused calls added {grown} bytes of audit"


def test_helper_protocol_violation_record_names_the_peer(helper):
    peer = helper.raw()
    peer.send(frame(b"\xc1\xc1\xc1"))
    peer.expect_violation("malformed frame")
    helper.good_call()
    helper.audit.expect(decision="protocol-violation", peer_uid=0, peer_pid=os.getpid())
