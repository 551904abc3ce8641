"""The functions every red-team target serves.

Fork mode registers them on :data:`ctx` (then narrows the table with the
same policy the other targets load); ``privsepd helper`` (spawn) and
``privsepd serve`` (daemon) import this module by the names policy gives
(``security.entrypoints:NAME``), exactly as they would a service's own
module. Some are deliberately generous (``run`` executes any program it is
given): they stand for a badly written entrypoint, so the tests show what
the helper's scope still holds when the function itself does not.
"""

from __future__ import annotations

import subprocess

from privsepd.constraints import PathUnder
from privsepd.context import Context

#: The fork-mode context; spawn and daemon declare "t-sec" in policy.
ctx = Context("t-sec", timeout=10)
#: Another context in the same service: its functions are not t-sec's.
other = Context("t-sec-other", timeout=10)

#: Base of ``read_beneath``'s PathUnder check, set by the race test before
#: the helper forks (the constraint's prefix is fixed at import elsewhere).
BENEATH = PathUnder("/nonexistent-privsepd-redteam", must_exist=True)


@ctx.entrypoint
def echo(*values):
    """The good call: returns its arguments."""
    return list(values)


@ctx.entrypoint
def whoami() -> dict:
    """The helper's identity and capability sets, from its own /proc entry."""
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {k: status[k] for k in ("Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapAmb")}


@ctx.entrypoint
def run(argv: list) -> list:
    """A careless entrypoint: runs whatever program it is given."""
    proc = subprocess.run(argv, capture_output=True, timeout=20)
    return [proc.returncode, proc.stdout, proc.stderr]


@ctx.entrypoint
def child_env() -> str:
    """What a subprocess that an entrypoint starts sees as its environment."""
    return subprocess.run(["/usr/bin/env"], capture_output=True, check=True).stdout.decode()


@ctx.entrypoint
def read_beneath(path: str) -> bytes:
    """Reads a file under BENEATH the way docs/policy.md advises ("Paths and
    races"): ``PathUnder.open``, never the caller's string re-resolved."""
    with BENEATH.open(path, "rb") as f:
        return f.read()


@ctx.entrypoint
def unlisted() -> str:
    """Registered in code, absent from policy: never callable."""
    return "unlisted ran"


@other.entrypoint
def other_secret() -> str:
    """Belongs to context t-sec-other: a t-sec helper must not run it."""
    return "other context ran"


def _private() -> str:
    """A module-level function that is no entrypoint at all."""
    return "private ran"


_SERVED = (echo, whoami, run, child_env, read_beneath, unlisted)


def fresh_context(name: str = "t-sec", **kwargs) -> Context:
    """A new service-side Context with this module's t-sec functions registered.

    Each fork-mode test gets its own (a Context's table is fixed once its
    helper starts); the names are the module's, so policy finds them.
    """
    fresh = Context(name, timeout=10, **kwargs)
    for func in _SERVED:
        fresh.entrypoint(func)
    return fresh
