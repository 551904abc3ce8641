"""oslo.privsep-style code runs on privsepd by changing its import."""

from __future__ import annotations

import os
import time

import pytest

from privsepd import CallTimeout
from privsepd.compat import capabilities as caps
from privsepd.compat import priv_context

ctx = priv_context.PrivContext(
    __name__.split(".")[0],
    cfg_section="t_compat",
    pypath=__name__ + ".ctx",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_NET_RAW],
)


@ctx.entrypoint
def whoami() -> list:
    return [os.getpid(), os.geteuid()]


@ctx.entrypoint_with_timeout(0.2)
def slow() -> None:
    time.sleep(2)


@pytest.fixture(autouse=True)
def _stop():
    yield
    ctx.set_client_mode(True)
    ctx.stop()


def test_numeric_capabilities_become_the_helpers_capability_sets(root):
    ctx.start(priv_context.Method.FORK)
    with open(f"/proc/{ctx.context.helper_pid}/status") as f:
        status = dict(line.split(":\t", 1) for line in f if ":\t" in line)
    assert int(status["CapEff"], 16) == (1 << 12) | (1 << 13)


def test_entrypoint_runs_in_the_helper_not_as_root(root):
    pid, euid = whoami()
    assert pid != os.getpid() and euid != 0


def test_entrypoint_with_timeout_raises_call_timeout(root):
    with pytest.raises(CallTimeout, match="within 0.2s"):
        slow()


def test_client_mode_off_runs_the_function_in_process():
    ctx.set_client_mode(False)
    assert whoami() == [os.getpid(), os.geteuid()]
    assert ctx.context.helper_pid is None


def test_entrypoint_outside_the_prefix_is_refused():
    other = priv_context.PrivContext("nova", capabilities=[])
    with pytest.raises(AssertionError, match='entrypoints must be below "nova"'):
        other.entrypoint(whoami.__wrapped__)


def test_capabilities_are_required():
    with pytest.raises(ValueError, match="capabilities is a required parameter"):
        priv_context.PrivContext("x")
