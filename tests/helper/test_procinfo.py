"""python-prctl where it serves: a helper's process title, a second read-back.

Real helpers and real processes: the title is read from /proc/PID/cmdline,
/proc/PID/comm and ``ps``; the read-back is compared with /proc after the
process really changed its capabilities. The fallback (no python-prctl, as on
PyPy) is exercised in a fresh interpreter where ``import prctl`` fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from conftest import in_child, require_root

from privsepd.context import Context
from privsepd.errors import ScopingError
from privsepd.helper import kernel, procinfo
from privsepd.helper.scoping import read_scope

needs_python_prctl = pytest.mark.skipif(
    not procinfo.HAVE_PYTHON_PRCTL,
    reason="python-prctl is CPython-only (its C extension does not import on PyPy); "
    "the fallback tests below cover this interpreter",
)


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().rstrip(b"\0").replace(b"\0", b" ").decode()


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_title_names_context_and_capabilities_sorted():
    title = procinfo.helper_title("neutron", ["CAP_NET_RAW", "CAP_NET_ADMIN"])
    assert title == "privsepd-helper: neutron [CAP_NET_ADMIN, CAP_NET_RAW]"


def test_comm_fits_the_kernels_15_bytes():
    assert len(procinfo.COMM.encode()) == 15


# A service's command line: python-prctl writes the title into the room of
# the service's own argv (which the fork-mode helper inherits), so the tests
# run the service as a real one is run, not inside pytest's command line.
SERVICE = textwrap.dedent(
    """
    import sys
    if sys.argv[1:2] == ["--without-python-prctl"]:
        sys.modules["prctl"] = None  # import prctl now raises ImportError, as on PyPy
        from privsepd.helper import procinfo
        assert not procinfo.HAVE_PYTHON_PRCTL
        assert procinfo.prctl_readback() is None
    if sys.argv[1:2] == ["--clear-environment"]:
        import os
        os.environ.clear()
    from privsepd.context import Context
    ctx = Context("t-title", capabilities=["CAP_NET_ADMIN"])
    ctx.start()
    print(ctx.helper_pid, flush=True)
    sys.stdin.readline()
    ctx.stop()
    """
)


@contextlib.contextmanager
def service_helper(*argv: str) -> Iterator[int]:
    """The pid of the fork-mode helper of a service run as ``python -c SERVICE ARGV...``."""
    require_root()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read()
        yield int(line)
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()


@needs_python_prctl
def test_ps_shows_a_real_helpers_title():
    with service_helper("--config-file", "/etc/neutron/neutron.conf") as pid:
        assert _cmdline(pid) == "privsepd-helper: t-title [CAP_NET_ADMIN]"
        assert _comm(pid) == "privsepd-helper"
        ps = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True
        )
        assert ps.stdout.strip() == "privsepd-helper: t-title [CAP_NET_ADMIN]"


def test_without_python_prctl_a_real_helper_still_starts_and_sets_its_comm():
    with service_helper("--without-python-prctl") as pid:
        assert _comm(pid) == "privsepd-helper"
        # Without python-prctl the command line is left as it was.
        assert _cmdline(pid).startswith(sys.executable)
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        assert "CapEff:\t0000000000001000" in status  # CAP_NET_ADMIN only: scoped for real


def test_fallback_set_name_goes_through_our_own_prctl_binding():
    def child() -> list[str]:
        kernel.set_name("privsepd-helper-and-more")
        with open("/proc/self/comm") as f:
            return [kernel.get_name(), f.read().strip()]

    assert in_child(child) == ["privsepd-helper", "privsepd-helper"]


# -- the independent read-back ------------------------------------------------------


@needs_python_prctl
def test_readback_agrees_with_proc_after_a_real_capability_change():
    require_root()

    def child() -> list[bool]:
        eff, prm, inh = kernel.capget()
        kernel.capset(eff & ~(1 << kernel.CAPABILITIES["CAP_CHOWN"]), prm, inh)
        reading = procinfo.prctl_readback()
        procinfo.verify_readback(reading, read_scope())  # raises on disagreement
        return ["CAP_CHOWN" in reading.cap_eff, "CAP_CHOWN" in reading.cap_prm]

    assert in_child(child) == [False, True]


@needs_python_prctl
@pytest.mark.parametrize("field", ["cap_eff", "cap_prm", "cap_bnd"])
def test_readback_refuses_a_proc_report_that_differs(field):
    require_root()

    def child() -> str:
        report = read_scope()
        forged = dataclasses.replace(report, **{field: getattr(report, field) - {"CAP_CHOWN"}})
        try:
            procinfo.verify_readback(procinfo.prctl_readback(), forged)
        except ScopingError as exc:
            return str(exc)
        return "accepted"

    message = in_child(child)
    assert message.startswith("independent read-back disagrees: " + field), message


@needs_python_prctl
def test_readback_refuses_securebits_that_differ():
    def child() -> str:
        report = dataclasses.replace(read_scope(), securebits=0x2F)
        try:
            procinfo.verify_readback(procinfo.prctl_readback(), report)
        except ScopingError as exc:
            return str(exc)
        return "accepted"

    assert "securebits: python-prctl 0x" in in_child(child)


second = Context("t-second", capabilities=["CAP_NET_ADMIN"])


@second.entrypoint
def _second_reading() -> list[str]:
    reading = procinfo.prctl_readback()
    return sorted(reading.cap_eff | reading.cap_prm | reading.cap_bnd)


@needs_python_prctl
def test_a_scoped_helper_reads_the_same_through_python_prctl():
    require_root()
    second.start()
    try:
        assert _second_reading() == ["CAP_NET_ADMIN"]
    finally:
        second.stop()


def test_title_after_the_environment_was_cleared_falls_back_to_comm_instead_of_crashing():
    # python-prctl finds argv by walking back from environ[0]: with the
    # environment cleared that walk would run through the heap (SIGSEGV).
    def child() -> list[str]:
        os.environ.clear()
        how = procinfo.set_title("privsepd-helper: t [CAP_NET_ADMIN]")
        return [how, _comm(os.getpid())]

    assert in_child(child) == ["comm", "privsepd-helper"]


@needs_python_prctl
def test_title_once_set_can_be_set_again_after_the_environment_changed():
    def child() -> list[str]:
        procinfo.set_title("privsepd-helper")
        os.environ.clear()
        how = procinfo.set_title("privsepd-helper: t [CAP_NET_ADMIN]")
        return [how, _cmdline(os.getpid())]

    assert in_child(child) == ["cmdline", "privsepd-helper: t [CAP_NET_ADMIN]"]


def test_a_service_that_cleared_its_environment_still_gets_a_scoped_helper():
    with service_helper("--clear-environment") as pid:
        with open(f"/proc/{pid}/status") as f:
            assert "CapEff:\t0000000000001000" in f.read()
