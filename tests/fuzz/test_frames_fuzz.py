"""Fuzz target: the frame decoder and both protocol state machines (privsepd/channel/protocol.py).

Invariant: any bytes, fed in any chunks, to ``FrameDecoder.feed``,
``ServerProtocol.receive_data`` or ``ClientProtocol.receive_data`` either
yield events or raise ``ProtocolError`` (``HandshakeError`` is one) -- never
another exception, and within a bounded time. After an error the decoder
stays poisoned (every later feed raises again). How the bytes are split
into chunks never changes the outcome. A msgpack-native message within the
limits survives ``encode_frame`` and decoding unchanged, and one beyond
them is refused by ``encode_frame`` with ProtocolError.

Seeds: ``corpus/frames/to-helper-*.bin`` (what a client sends: hello, then
requests) and ``to-client-*.bin`` (what a helper sends), each checked whole
and a byte at a time.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from fuzzing import bounded, budget, seeds
from hypothesis import example, given
from hypothesis import strategies as st

from privsepd.channel.protocol import (
    DEFAULT_LIMITS,
    HEADER,
    ClientProtocol,
    FrameDecoder,
    ServerProtocol,
    encode_frame,
)
from privsepd.errors import ProtocolError

MACHINES = {
    "decoder": lambda: FrameDecoder(),
    "server": lambda: ServerProtocol("t"),
    "client": lambda: ClientProtocol("t"),
}


def feed(machine: Any, chunk: bytes) -> list:
    if isinstance(machine, FrameDecoder):
        return machine.feed(chunk)
    return machine.receive_data(chunk)


def outcome(kind: str, chunks: list[bytes]) -> tuple:
    """("events", [...]) or ("error", type, message) -- anything else fails the test."""
    machine = MACHINES[kind]()
    events: list = []
    with bounded():
        try:
            for chunk in chunks:
                events.extend(feed(machine, chunk))
        except ProtocolError as exc:
            again = _after_error(machine)
            assert again is not None, f"{kind} accepted input after {exc!r}"
            return ("error", type(exc).__name__, str(exc))
        except Exception as exc:  # the invariant: nothing else ever escapes
            raise AssertionError(f"{kind} raised {exc!r} for {chunks!r:.300}") from exc
    return ("events", [tuple(e) if isinstance(e, tuple) else e for e in events])


def _after_error(machine: Any) -> Exception | None:
    try:
        feed(machine, HEADER.pack(1) + b"\xc0")
    except ProtocolError as exc:
        return exc
    return None


def check_all_machines(data: bytes, cuts: list[int] = ()) -> None:
    """Whole, split at ``cuts``: every machine obeys the invariant, the same way."""
    pieces, last = [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    for kind in MACHINES:
        whole = outcome(kind, [data])
        split = outcome(kind, pieces)
        same = repr(whole[:2]) == repr(split[:2])  # repr: NaN != NaN
        assert same, f"{kind}: chunking changed {whole!r:.200} to {split!r:.200}"


# -- seeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", seeds("frames", "*.bin"), ids=lambda p: p.stem)
def test_frame_seed_obeys_the_invariant_whole_and_byte_by_byte(path):
    data = path.read_bytes()
    kind = "server" if path.name.startswith("to-helper") else "client"
    whole = outcome(kind, [data])
    bytewise = outcome(kind, [data[i : i + 1] for i in range(len(data))])
    assert repr(whole[:2]) == repr(bytewise[:2])
    check_all_machines(data)


def test_container_budget_boundary_is_refused_as_a_protocol_error():
    half = DEFAULT_LIMITS.max_containers_total // 2
    msg = msgpack.packb([1, "call", "m:f", [[{}] * half, [{}] * half], {}])
    hello = encode_frame(["privsepd", 1, "t"])
    got = outcome("server", [hello + HEADER.pack(len(msg)) + msg])
    assert got[0] == "error" and "arrays/maps" in got[2], got


def test_array_one_longer_than_the_limit_is_refused_as_a_protocol_error():
    msg = msgpack.packb([1, "call", "m:f", list(range(DEFAULT_LIMITS.max_container + 1)), {}])
    got = outcome("decoder", [HEADER.pack(len(msg)) + msg])
    assert got[0] == "error", got


# -- generated ---------------------------------------------------------------------------------

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can hold
scalars = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
natives = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=5) | ints | st.binary(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)
ext_values = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=70))


@budget(150)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=4))
@example(data=HEADER.pack(0), cuts=[])
@example(data=HEADER.pack(2**32 - 1) + b"x", cuts=[2])
def test_fuzz_any_bytes_are_events_or_a_protocol_error(data, cuts):
    check_all_machines(data, cuts)


@budget(150)
@given(
    message=st.lists(natives | ext_values, max_size=6),
    lie=st.none() | st.integers(0, 2**32 - 1),
    flip=st.none() | st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
    hello=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=3),
)
def test_fuzz_framed_messages_with_lies_and_flipped_bytes(message, lie, flip, hello, cuts):
    payload = bytearray(msgpack.packb(message, use_bin_type=True))
    if flip is not None and payload:
        payload[flip[0] % len(payload)] = flip[1]
    data = HEADER.pack(len(payload) if lie is None else lie) + bytes(payload)
    if hello:
        data = encode_frame(["privsepd", 1, "t"]) + data
    check_all_machines(data, cuts)


@budget(150)
@given(value=natives)
def test_fuzz_native_values_round_trip_or_are_refused_at_encoding(value):
    try:
        data = encode_frame([1, "call", "m:f", [value], {}])
    except ProtocolError:
        return  # beyond a limit: refused before anything is sent
    got = outcome("decoder", [data])
    assert got == ("events", [[1, "call", "m:f", [value], {}]]), got
