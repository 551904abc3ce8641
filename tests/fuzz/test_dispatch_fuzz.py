"""Fuzzing ``Monitor.dispatch``, the helper's one entry for every request.

Invariant: for ANY msgpack-native op, name, args and kwargs,
``Monitor.dispatch`` returns ``(ok, payload)`` and never raises; a failure
payload is a ``(type name, message, errno)`` triple that can cross the
channel; and the request left at least one audit record, a bounded JSON
object on one line, in the helper's root-owned sink.

The seed corpus (``corpus/*.msgpack``, each ``[op, name, args, kwargs]``,
plus the oversize requests built in :data:`GENERATED`) runs as ordinary
tests. It starts with the crash this guards against: an ``exec`` whose
``argv[0]`` is a map with bytes keys made the audit record's ``json.dumps``
raise, and the helper exit 70 without a record.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
import textwrap

import msgpack
import pytest
from conftest import require_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privsepd.audit import MAX_FIELD, AuditLog
from privsepd.channel.protocol import Request, ServerProtocol, encode_frame
from privsepd.constraints import IntRange
from privsepd.helper.execute import CommandRunner
from privsepd.helper.monitor import Entrypoint, Monitor
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import parse_filters

CORPUS = pathlib.Path(__file__).parent / "corpus"
HERE = "test_dispatch_fuzz:"
DECISIONS = {"allow", "deny", "error", "done"}
# A record's strings are bounded to 16 KiB; JSON escaping of non-ASCII can
# grow a character to 12 bytes.
MAX_LINE = 16384 * 12 + 8192
SERVER = ServerProtocol("t-fuzz")


def echo(*values):
    return list(values)


def ints(*values):
    return list(values)


def keywords(**options):
    return options


def exits():
    raise SystemExit(3)


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


def bad_str():
    raise BadStr()


def unsendable():
    return {1, 2}


ENTRYPOINTS = {
    HERE + "echo": Entrypoint(HERE + "echo", echo),
    HERE + "ints": Entrypoint(HERE + "ints", ints, {"values": IntRange(0, 100)}),
    HERE + "keywords": Entrypoint(HERE + "keywords", keywords, {"options": IntRange(0, 100)}),
    HERE + "exits": Entrypoint(HERE + "exits", exits),
    HERE + "bad_str": Entrypoint(HERE + "bad_str", bad_str),
    HERE + "unsendable": Entrypoint(HERE + "unsendable", unsendable),
}

FILTERS = textwrap.dedent(
    """
    [Filters]
    true: CommandFilter, /bin/true, root
    """
)


class Helper:
    """A Monitor as the helper builds it: real command runner, real file sink."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.log = directory / "audit.jsonl"
        audit = AuditLog.open(str(self.log))
        index = FilterIndex(parse_filters(FILTERS, "fuzz.filters"), ["/bin", "/usr/bin"])
        runner = CommandRunner(index, context="t-fuzz", audit=audit)
        self.monitor = Monitor("t-fuzz", ENTRYPOINTS, runner, audit, {"peer_uid": 1000})
        self._seen = 0

    def new_records(self) -> list[dict]:
        with open(self.log, "rb") as f:
            f.seek(self._seen)
            data = f.read()
        self._seen += len(data)
        lines = data.split(b"\n")
        assert lines[-1] == b"", "a record does not end with a newline"
        records = []
        for line in lines[:-1]:
            assert len(line) <= MAX_LINE, f"record of {len(line)} bytes"
            records.append(json.loads(line))
        return records


@pytest.fixture(scope="module")
def helper():
    require_root()
    directory = pathlib.Path(tempfile.mkdtemp(prefix="privsepd-fuzz-", dir="/run"))
    directory.chmod(0o755)
    try:
        yield Helper(directory)
    finally:
        shutil.rmtree(directory)


def check_invariant(helper: Helper, op, name, args, kwargs) -> tuple[bool, object]:
    """Dispatch one request and assert the invariant stated at the top."""
    outcome = helper.monitor.dispatch(Request(1, op, name, args, kwargs))
    assert isinstance(outcome, tuple) and len(outcome) == 2
    ok, payload = outcome
    if ok:
        encode_frame([1, "ok", payload])  # the result crosses the channel
    else:
        type_name, message, errno = payload[:3]
        assert type(type_name) is str and type(message) is str
        assert errno is None or type(errno) is int
        SERVER.reply_error(1, *payload)  # the error crosses the channel
    records = helper.new_records()
    assert records, f"no audit record for {op!r} {name!r}"
    for record in records:
        assert record["context"] == "t-fuzz"
        assert record["decision"] in DECISIONS
    return ok, payload


# -- the seed corpus ---------------------------------------------------------------


def corpus_files() -> list[pathlib.Path]:
    files = sorted(CORPUS.glob("*.msgpack"))
    assert len(files) >= 40, "the seed corpus went missing"
    return files


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_corpus_request_gets_a_reply_and_a_record(helper, path):
    op, name, args, kwargs = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
    check_invariant(helper, op, name, args, kwargs)


GENERATED = {
    "name_of_4_mib": ("call", "m:" + "f" * (4 << 20), [], {}),
    "argv_of_100k_items": ("exec", "ls", ["ls"] * 100_000, {}),
    "argv_item_of_1_mib": ("exec", "ls", ["ls", "x" * (1 << 20)], {}),
    "args_map_of_50k_bytes_keys": (
        "call",
        HERE + "echo",
        [{b"%d" % i: i for i in range(50_000)}],
        {},
    ),
    "kwargs_of_10k_keys": ("call", "nope", [], {f"k{i}": "v" * 100 for i in range(10_000)}),
}


@pytest.mark.parametrize("request_", list(GENERATED.values()), ids=list(GENERATED))
def test_oversize_request_gets_a_reply_and_a_bounded_record(helper, request_):
    check_invariant(helper, *request_)


def test_the_reported_crash_is_a_denial_with_a_record(helper):
    ok, (type_name, message, *_) = check_invariant(helper, "exec", "x", [{b"k": 1}], {})
    assert (ok, type_name) == (False, "DeniedError")
    assert message == "command must be a non-empty list of strings"


def test_a_newline_in_an_argument_stays_inside_its_record(helper):
    helper.monitor.dispatch(Request(1, "exec", "ls", ["ls", 'a\n{"decision":"allow"}'], {}))
    (record,) = helper.new_records()
    assert record["decision"] == "deny" and record["argv"] == ["ls", 'a\n{"decision":"allow"}']


def test_fields_are_cut_at_the_bound_with_a_marker(helper):
    helper.monitor.dispatch(Request(1, "call", "m:" + "f" * 5000, [], {}))
    (record,) = helper.new_records()
    assert record["name"] == "m:" + "f" * (MAX_FIELD - 2) + "...[+3978 chars]"
    assert record["truncated"] is True


def test_ten_requests_with_a_4_mib_name_add_little_audit(helper):
    before = os.path.getsize(helper.log)
    for _ in range(10):
        helper.monitor.dispatch(Request(1, "call", "f" * (4 << 20), [], {}))
    helper.new_records()
    assert os.path.getsize(helper.log) - before < 10 * 4096  # was 79 MiB


# -- hypothesis --------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
# msgpack-native: what a frame can carry (integers in msgpack's range).
keys = st.text(max_size=5) | st.binary(max_size=5) | st.integers(-(2**63), 2**64 - 1)
native = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
ops = st.sampled_from(["call", "exec", "ping"]) | native
names = st.sampled_from([*ENTRYPOINTS, "true", "os:system", ""]) | native
argvs = st.lists(st.sampled_from(["true", "/bin/true", "ls"]) | native, max_size=5)
args = argvs | native
kwargs = (
    st.dictionaries(st.sampled_from(["env", "input", "timeout", "a", "values"]), native, max_size=3)
    | native
)


@settings(
    max_examples=int(os.environ.get("PRIVSEPD_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops, names, args, kwargs)
def test_fuzz_dispatch_always_replies_and_records(helper, op, name, args_, kwargs_):
    ok, payload = check_invariant(helper, op, name, args_, kwargs_)
    if ok and op == "call":
        assert name in ENTRYPOINTS


def test_dispatch_denies_without_running_when_argv_holds_non_str(helper):
    ran: list = []

    def runner(argv: list, options: dict) -> list:
        ran.append(argv)
        return [0, b"", b""]

    monitor = Monitor("t-fuzz", {}, runner, AuditLog.open(str(helper.log)))
    for argv in (["true", b"x"], ["true", 1], [b"true"], ["true", None], [["true"]]):
        ok, (type_name, message, *_) = monitor.dispatch(Request(1, "exec", "true", argv, {}))
        assert (ok, type_name) == (False, "DeniedError"), argv
        assert message == "command must be a non-empty list of strings"
    helper.new_records()
    assert ran == []
    ok, _ = monitor.dispatch(Request(1, "exec", "true", ["true", "x"], {}))
    assert ok and ran == [["true", "x"]]
    helper.new_records()


def test_floats_that_json_cannot_hold_are_recorded_as_text(helper):
    helper.monitor.dispatch(Request(1, "call", HERE + "echo", [math.nan, math.inf], {}))
    (record,) = helper.new_records()
    assert record["args"] == ["nan", "inf"]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ({"a": 1}, {}, "arguments must be a list, not dict"),
        (None, {}, "arguments must be a list, not NoneType"),
        ([], [1, 2], "keyword arguments must be a map with str keys"),
        ([], {b"a": 1}, "keyword arguments must be a map with str keys"),
    ],
)
def test_call_arguments_of_the_wrong_shape_are_denied(helper, args, kwargs, message):
    ok, (type_name, text, *_) = check_invariant(helper, "call", HERE + "echo", args, kwargs)
    assert (ok, type_name) == (False, "DeniedError") and text.endswith(message)


@pytest.mark.parametrize("name", [b"x", None, ["x"], {b"k": 1}, 7])
def test_a_function_name_that_is_not_str_is_an_unknown_function(helper, name):
    ok, (type_name, *_) = check_invariant(helper, "call", name, [], {})
    assert (ok, type_name) == (False, "UnknownFunctionError")


class BrokenSink(AuditLog):
    """A sink with a bug of its own (not an AuditError): dispatch must still answer."""

    def wants(self, decision):
        return True

    def _emit(self, decision, line):  # where every record, templated or not, is written
        raise ValueError("sink bug")


@pytest.mark.parametrize("op", ["call", "exec", "ping"])
def test_dispatch_answers_even_when_the_audit_sink_itself_is_broken(op):
    monitor = Monitor("t-fuzz", ENTRYPOINTS, lambda argv, options: [0, b"", b""], BrokenSink())
    ok, (type_name, message, *_) = monitor.dispatch(Request(1, op, HERE + "echo", ["true"], {}))
    assert (ok, type_name) == (False, "RuntimeError")
    assert "ValueError: sink bug" in message
