"""privsepd.helper.spawn: what a command started through libc posix_spawn gets.

Real children, read back from /proc; no root needed.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

import pytest
from conftest import require_feature

from privsepd.helper import spawn as spawn_module
from privsepd.helper.spawn import RESET_SIGNALS, spawn


@pytest.fixture(autouse=True)
def _libc_spawn():
    require_feature(spawn_module.AVAILABLE, "libc posix_spawn with closefrom/chdir (glibc 2.34+)")


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Spawn argv with a stdout pipe; return (exit status, stdout)."""
    out_r, out_w = os.pipe()
    try:
        pid = spawn(argv[0], argv, env or {}, None, out_w, 2)
    finally:
        os.close(out_w)
    chunks = []
    while True:
        data = os.read(out_r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def status_of(out: bytes) -> dict[str, str]:
    return dict(
        (k, v.strip()) for k, v in (line.split(":", 1) for line in out.decode().splitlines())
    )


def test_every_descriptor_above_two_is_closed_even_an_inheritable_one():
    r, w = os.pipe()
    leaked = os.dup(w)
    os.set_inheritable(leaked, True)
    try:
        rc, out = run(["/bin/ls", "/proc/self/fd"])
    finally:
        for fd in (r, w, leaked):
            os.close(fd)
    assert rc == 0
    assert sorted(int(x) for x in out.split()) == [0, 1, 2, 3]  # 3: ls's own directory


def test_the_command_starts_in_the_root_directory_whatever_ours(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["/bin/pwd"]) == (0, b"/\n")


def test_the_command_leads_a_new_session():
    rc, out = run(["/bin/cat", "/proc/self/stat"])
    fields = out.rsplit(b")", 1)[1].split()
    pid, session = int(out.split()[0]), int(fields[3])
    assert rc == 0 and session == pid != os.getsid(0)


def test_signal_mask_is_empty_and_reset_signals_are_at_their_defaults():
    # Python ignores SIGPIPE; ignore SIGINT too and block SIGUSR1 in this
    # thread: none of it may reach the command.
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        rc, out = run(["/bin/cat", "/proc/self/status"])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, old_int)
    fields = status_of(out)
    assert rc == 0
    assert int(fields["SigBlk"], 16) == 0
    ignored = int(fields["SigIgn"], 16)
    assert [s.name for s in RESET_SIGNALS if ignored & (1 << (s - 1))] == []


def test_stdin_is_dev_null_when_none_is_given():
    assert run(["/bin/readlink", "/proc/self/fd/0"]) == (0, b"/dev/null\n")


def test_the_environment_is_exactly_the_one_given():
    rc, out = run(["/usr/bin/env"], {"A": "1", "PATH": "/bin"})
    assert (rc, sorted(out.split())) == (0, [b"A=1", b"PATH=/bin"])


def test_a_missing_program_raises_enoent_naming_it():
    with pytest.raises(OSError) as info:
        spawn("/nonexistent/program", ["x"], {}, None, 1, 2)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "/nonexistent/program"


@pytest.mark.parametrize(
    "argv, env",
    [(["/bin/true", "a\0b"], {}), (["/bin/true"], {"A": "x\0y"}), (["/bin/true"], {"A=B": "1"})],
)
def test_a_null_byte_or_bad_name_is_refused_before_anything_starts(argv, env):
    with pytest.raises(ValueError):
        spawn(argv[0], argv, env, None, 1, 2)


def test_spawns_from_many_threads_each_get_their_own_pipes():
    results: dict[int, bytes] = {}

    def one(i: int) -> None:
        for _ in range(20):
            rc, out = run(["/bin/echo", str(i)])
            assert rc == 0
            results[i] = out

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i}\n".encode() for i in range(8)}


def test_every_argument_reaches_the_command_in_order():
    argv = ["/bin/echo", "a", "", "bb", "c c", "é"]
    assert run(argv) == (0, "a  bb c c é\n".encode())


def test_each_environment_reaches_its_own_command_when_they_alternate():
    # Environments are built once and reused: alternating ones must never mix.
    for i in range(6):
        env = {"N": str(i % 3), "PATH": "/bin"}
        rc, out = run(["/usr/bin/env"], env)
        assert (rc, sorted(out.split())) == (0, [f"N={i % 3}".encode(), b"PATH=/bin"])


def test_a_refused_environment_stays_refused_after_a_good_one_was_used():
    run(["/bin/true"], {"A": "1"})
    with pytest.raises(ValueError):
        spawn("/bin/true", ["/bin/true"], {"A": "1", "B=C": "2"}, None, 1, 2)
    with pytest.raises(ValueError):
        spawn("/bin/true", ["/bin/true"], {"A": "1", "B=C": "2"}, None, 1, 2)


def test_output_goes_to_the_descriptors_of_this_call_not_an_earlier_one():
    # File actions are kept per descriptor triple: a new triple gets its own,
    # and a triple seen before sends output to the descriptors now at those numbers.
    outs = []
    for _ in range(3):
        keep = [os.pipe() for _ in range(len(outs) + 1)]  # shift the numbers
        r, w = os.pipe()
        r_err, w_err = os.pipe()
        pid = spawn("/bin/sh", ["/bin/sh", "-c", "echo out; echo err >&2"], {}, None, w, w_err)
        os.close(w)
        os.close(w_err)
        _, status = os.waitpid(pid, 0)
        outs.append((os.waitstatus_to_exitcode(status), os.read(r, 100), os.read(r_err, 100)))
        for fd in (r, r_err, *(fd for pair in keep for fd in pair)):
            os.close(fd)
    assert outs == [(0, b"out\n", b"err\n")] * 3


def test_stdin_from_a_pipe_when_one_is_given():
    r_in, w_in = os.pipe()
    out_r, out_w = os.pipe()
    os.write(w_in, b"fed\n")
    os.close(w_in)
    pid = spawn("/bin/cat", ["/bin/cat"], {}, r_in, out_w, 2)
    os.close(r_in)
    os.close(out_w)
    _, status = os.waitpid(pid, 0)
    assert (os.waitstatus_to_exitcode(status), os.read(out_r, 100)) == (0, b"fed\n")
    os.close(out_r)
