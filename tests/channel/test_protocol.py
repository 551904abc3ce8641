"""The sans-IO channel protocol: framing, limits, handshake, message shapes."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsepd.channel.protocol import (
    MAGIC,
    ClientProtocol,
    FrameDecoder,
    Limits,
    LogRecord,
    Reply,
    Request,
    ServerProtocol,
    State,
    Welcome,
    encode_frame,
)
from privsepd.errors import HandshakeError, ProtocolError


def frame(obj) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def ready_pair(context: str = "ctx") -> tuple[ClientProtocol, ServerProtocol]:
    client, server = ClientProtocol(context), ServerProtocol(context)
    assert server.receive_data(client.hello()) == []
    assert client.receive_data(server.take_output()) == [Welcome(context)]
    return client, server


# -- framing -----------------------------------------------------------------


def test_frame_roundtrip_keeps_bytes_and_str_distinct():
    msg = [b"raw\xff", "text", 1, -2, 1.5, None, True, {"k": [b"v"]}]
    assert FrameDecoder().feed(encode_frame(msg)) == [msg]


def test_decoder_returns_nothing_until_a_frame_is_complete():
    data = encode_frame(["a", "b"])
    dec = FrameDecoder()
    assert dec.feed(data[:3]) == []
    assert dec.feed(data[3:-1]) == []
    assert dec.feed(data[-1:]) == [["a", "b"]]


def test_decoder_splits_several_frames_from_one_chunk():
    data = encode_frame([1]) + encode_frame([2]) + encode_frame([3])[:2]
    dec = FrameDecoder()
    assert dec.feed(data) == [[1], [2]]
    assert dec.buffered == 2


def test_oversize_length_header_is_refused_before_the_payload_arrives():
    dec = FrameDecoder(Limits(max_frame=1024))
    with pytest.raises(ProtocolError, match="frame of 1025 bytes exceeds limit of 1024"):
        dec.feed(struct.pack(">I", 1025))
    assert dec.buffered == 0


def test_encoder_refuses_a_frame_over_the_limit():
    with pytest.raises(ProtocolError, match="exceeds limit"):
        encode_frame(b"x" * 2048, Limits(max_frame=1024))


def test_empty_frame_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="empty frame"):
        FrameDecoder().feed(b"\0\0\0\0")


def test_garbage_payload_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="malformed frame"):
        FrameDecoder().feed(struct.pack(">I", 2) + b"\xc1\xc1")


def test_trailing_bytes_inside_a_frame_are_a_protocol_error():
    payload = msgpack.packb(1) + msgpack.packb(2)
    with pytest.raises(ProtocolError, match="malformed frame"):
        FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


def test_invalid_utf8_in_a_str_is_a_protocol_error():
    payload = b"\xa2\xff\xfe"  # fixstr of 2 bytes, not UTF-8
    with pytest.raises(ProtocolError, match="malformed frame"):
        FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


def test_nesting_deeper_than_the_limit_is_refused():
    value: list = []
    for _ in range(40):
        value = [value]
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        FrameDecoder().feed(frame(value))


def test_container_longer_than_the_limit_is_refused():
    with pytest.raises(ProtocolError, match="malformed frame"):
        FrameDecoder(Limits(max_container=10)).feed(frame(list(range(11))))


def test_extension_types_do_not_cross():
    payload = msgpack.packb(msgpack.ExtType(5, b"x"))
    with pytest.raises(ProtocolError, match="extension type 5"):
        FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


def test_timestamps_do_not_cross():
    import datetime

    payload = msgpack.packb(
        datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), datetime=True
    )
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


def test_non_native_types_cannot_be_encoded():
    with pytest.raises(ProtocolError, match="type set cannot cross"):
        encode_frame([{1, 2}])


def test_decoder_stays_failed_after_an_error():
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(b"\0\0\0\0")
    with pytest.raises(ProtocolError):
        dec.feed(encode_frame([1]))


# -- handshake ---------------------------------------------------------------


def test_handshake_moves_both_sides_to_ready():
    client, server = ready_pair()
    assert (client.state, server.state) == (State.READY, State.READY)


def test_server_refuses_a_wrong_protocol_version_and_tells_the_client():
    client, server = ClientProtocol("ctx"), ServerProtocol("ctx")
    with pytest.raises(HandshakeError, match="protocol version mismatch: client speaks 99"):
        server.receive_data(encode_frame([MAGIC, 99, "ctx"]))
    with pytest.raises(HandshakeError, match="helper refused: protocol version mismatch"):
        client.receive_data(server.take_output())
    assert (client.state, server.state) == (State.CLOSED, State.CLOSED)


def test_server_refuses_a_wrong_context_name():
    client, server = ClientProtocol("other"), ServerProtocol("ctx")
    with pytest.raises(HandshakeError, match="context mismatch"):
        server.receive_data(client.hello())


def test_server_refuses_a_first_frame_that_is_not_a_hello():
    server = ServerProtocol("ctx")
    with pytest.raises(ProtocolError, match="not a privsepd hello"):
        server.receive_data(encode_frame([1, "call", "f", [], {}]))


def test_client_refuses_a_welcome_with_another_version():
    client = ClientProtocol("ctx")
    with pytest.raises(HandshakeError, match="helper speaks 2"):
        client.receive_data(encode_frame([MAGIC, 2, "ctx", "ok", ""]))


def test_client_cannot_send_requests_before_the_welcome():
    with pytest.raises(ProtocolError, match="state await-hello"):
        ClientProtocol("ctx").request(1, "call", "f", [], {})


# -- requests and replies -----------------------------------------------------


def test_request_reaches_the_server_as_a_request_event():
    client, server = ready_pair()
    data = client.request(7, "call", "mod:fn", (1, b"x"), {"k": "v"})
    assert server.receive_data(data) == [Request(7, "call", "mod:fn", [1, b"x"], {"k": "v"})]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ([0, "call", "f", [], {}], "positive integer"),
        ([True, "call", "f", [], {}], "positive integer"),
        ([1, "import", "os", [], {}], "unknown operation 'import'"),
        ([1, "call", b"f", [], {}], "name must be a string"),
        ([1, "call", "f", {}, {}], "args must be an array"),
        ([1, "call", "f", [], {1: 2}], "string keys"),
        ([1, "call", "f", []], "5-item array"),
    ],
)
def test_malformed_requests_are_refused_with_their_reason(bad, reason):
    _, server = ready_pair()
    with pytest.raises(ProtocolError, match=reason):
        server.receive_data(encode_frame(bad))
    assert server.state is State.CLOSED


def test_replies_and_logs_reach_the_client_as_events():
    client, server = ready_pair()
    data = (
        server.reply_ok(3, [1, 2])
        + server.reply_error(4, "ValueError", "bad", None)
        + server.log(30, "x.y", "careful")
    )
    assert client.receive_data(data) == [
        Reply(3, True, [1, 2]),
        Reply(4, False, None, ("ValueError", "bad", None)),
        LogRecord(30, "x.y", "careful"),
    ]


def test_malformed_error_payload_is_refused():
    client, _ = ready_pair()
    with pytest.raises(ProtocolError, match=r"error payload must be \[type, message, errno\]"):
        client.receive_data(encode_frame([1, "err", ["ValueError"]]))


def test_unknown_reply_kind_is_refused():
    client, _ = ready_pair()
    with pytest.raises(ProtocolError, match="unknown reply kind 'pickle'"):
        client.receive_data(encode_frame([1, "pickle", b""]))


# -- fuzzing: parse, or raise ProtocolError, never anything else --------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_decoder_raises_only_protocol_errors(data):
    dec = FrameDecoder(Limits(max_frame=256))
    try:
        dec.feed(data)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_server_raises_only_protocol_errors_on_framed_garbage(payloads):
    _, server = ready_pair()
    data = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    try:
        server.receive_data(data)
    except ProtocolError:
        pass


native = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(native, max_size=4), st.integers(1, 40))
def test_fuzz_any_split_of_valid_frames_decodes_to_the_same_messages(messages, cut):
    data = b"".join(encode_frame(m) for m in messages)
    dec = FrameDecoder()
    out = []
    for i in range(0, len(data), cut):
        out.extend(dec.feed(data[i : i + cut]))
    assert out == messages


@settings(max_examples=300, deadline=None)
@given(native)
def test_fuzz_server_request_decoding_never_raises_other_errors(value):
    _, server = ready_pair()
    try:
        server.receive_data(encode_frame([1, "call", "f", [value], {"k": value}]))
    except ProtocolError:
        pass


def test_container_budget_stops_a_frame_of_many_empty_maps():
    inner = b"\xdd" + struct.pack(">I", 60000) + b"\x80" * 60000
    payload = b"\xdd" + struct.pack(">I", 4) + inner * 4
    with pytest.raises(ProtocolError, match="more than 100000 arrays/maps"):
        FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


# -- exact boundaries (each pins one check: break it and a test here fails) ----


@pytest.mark.parametrize("version", [1])
def test_hello_with_the_exact_int_version_is_accepted(version):
    server = ServerProtocol("ctx")
    assert server.receive_data(encode_frame([MAGIC, version, "ctx"])) == []
    assert server.state is State.READY


@pytest.mark.parametrize("version", [True, 1.0, "1", 2, 0, None, [1]])
def test_hello_version_must_be_exactly_the_int_1(version):
    server = ServerProtocol("ctx")
    with pytest.raises(HandshakeError, match="protocol version mismatch"):
        server.receive_data(encode_frame([MAGIC, version, "ctx"]))
    assert server.state is State.CLOSED


@pytest.mark.parametrize("version", [True, 1.0])
def test_welcome_version_must_be_exactly_the_int_1(version):
    client = ClientProtocol("ctx")
    with pytest.raises(HandshakeError, match="protocol version mismatch"):
        client.receive_data(encode_frame([MAGIC, version, "ctx", "ok", ""]))


def test_client_refuses_a_welcome_for_another_context():
    client = ClientProtocol("ctx")
    with pytest.raises(HandshakeError, match="context mismatch: helper serves 'other'"):
        client.receive_data(encode_frame([MAGIC, 1, "other", "ok", ""]))
    assert client.state is State.CLOSED


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_nesting_of_exactly_the_limit_decodes():
    assert FrameDecoder().feed(frame(nested(32))) == [nested(32)]
    assert encode_frame(nested(32))


def test_nesting_one_past_the_limit_is_refused_on_both_sides():
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        FrameDecoder().feed(frame(nested(33)))
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        encode_frame(nested(33))


def test_encoder_refuses_a_container_one_past_the_limit():
    limits = Limits(max_container=10)
    assert encode_frame(list(range(10)), limits)
    with pytest.raises(ProtocolError, match="array of 11 items exceeds 10"):
        encode_frame(list(range(11)), limits)
    with pytest.raises(ProtocolError, match="map of 11 items exceeds 10"):
        encode_frame({str(i): i for i in range(11)}, limits)


def test_request_name_of_exactly_the_limit_is_accepted():
    client, server = ready_pair()
    name = "m:" + "f" * (Limits().max_name - 2)
    [request] = server.receive_data(client.request(1, "call", name, [], {}))
    assert request.name == name


def test_request_name_one_past_the_limit_is_refused_by_the_helper():
    _, server = ready_pair()
    name = "f" * (Limits().max_name + 1)
    with pytest.raises(ProtocolError, match=r"request name of 4097 characters exceeds 4096"):
        server.receive_data(encode_frame([1, "call", name, [], {}]))
    assert server.state is State.CLOSED


def test_client_refuses_to_send_a_name_past_the_limit():
    client, _ = ready_pair()
    with pytest.raises(ProtocolError, match="at most 4096 characters"):
        client.request(1, "call", "f" * 4097, [], {})
    assert client.state is State.READY  # nothing was sent


@pytest.mark.parametrize("op", [["call"], {"a": 1}, b"call", 1, None])
def test_request_op_of_any_other_type_is_a_protocol_error(op):
    _, server = ready_pair()
    with pytest.raises(ProtocolError, match="unknown operation"):
        server.receive_data(encode_frame([1, op, "f", [], {}]))


def test_a_huge_hello_version_is_refused_with_a_bounded_message():
    server = ServerProtocol("ctx")
    with pytest.raises(HandshakeError) as info:
        server.receive_data(encode_frame([MAGIC, "v" * 100_000, "ctx"]))
    assert len(str(info.value)) < 300


@settings(max_examples=300, deadline=None)
@given(st.lists(native, min_size=5, max_size=5))
def test_fuzz_any_five_item_request_is_a_request_or_a_protocol_error(message):
    """Invariant: a ready server turns any 5-item message into a Request or a ProtocolError."""
    _, server = ready_pair()
    try:
        server.receive_data(encode_frame(message))
    except ProtocolError:
        pass


# -- the encoder's per-thread Packer and the decoder's small-frame shortcut ----


def test_container_budget_counts_a_frame_one_byte_longer_than_the_budget():
    # A payload no longer than the budget cannot hold more containers than
    # it has bytes, so it is decoded without counting; one byte longer is
    # counted: 11 empty maps in an 11-byte payload exceed a budget of 10.
    limits = Limits(max_containers_total=10)
    payload = bytes([0x90 | 10]) + b"\x80" * 10
    with pytest.raises(ProtocolError, match="more than 10 arrays/maps"):
        FrameDecoder(limits).feed(struct.pack(">I", len(payload)) + payload)


def test_a_payload_as_long_as_the_container_budget_decodes():
    limits = Limits(max_containers_total=10)
    payload = bytes([0x90 | 9]) + b"\x80" * 9  # 10 containers, 10 bytes
    assert FrameDecoder(limits).feed(struct.pack(">I", len(payload)) + payload) == [[{}] * 9]


def test_a_failed_encoding_leaves_the_next_frame_intact():
    with pytest.raises(ProtocolError, match="64-bit"):
        encode_frame([1, "ok", 2**64])
    with pytest.raises(ProtocolError):
        encode_frame([1, "ok", object()])
    assert FrameDecoder().feed(encode_frame([2, "ok", "after"])) == [[2, "ok", "after"]]


def test_a_small_frame_after_a_large_one_holds_only_its_own_message():
    big = encode_frame([1, "ok", b"x" * (1024 * 1024)])
    small = encode_frame([2, "ok", None])
    decoder = FrameDecoder()
    assert decoder.feed(big + small) == [[1, "ok", b"x" * (1024 * 1024)], [2, "ok", None]]
    assert small == frame([2, "ok", None])


def test_threads_encoding_at_once_each_get_their_own_frame():
    import threading

    errors = []

    def work(n: int) -> None:
        decoder = FrameDecoder()
        for i in range(2000):
            message = [n * 100000 + i, "ok", ["t", n, i, "x" * (i % 50)]]
            if decoder.feed(encode_frame(message)) != [message]:
                errors.append((n, i))
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
